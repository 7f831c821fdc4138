"""Rebuilds the embedded demo checkpoint from nothing: every step of its history, in order, one command.

    python -m training.recipes.demo_rebuild --work_root runs/rebuild --out runs/rebuild/demo
    python -m training.recipes.demo_rebuild --dry_run            # print the commands only

The committed `checkpoints/demo` was not made by one `demo` run but grown in steps, each measured
before it was kept (its model card, "Data and training", numbers them 1-18). This runs the same
commands with the same settings, one after another:

  corpus     training.data.synth --size full, every training question once more by festival's voices
  general    training.data.general_speech: English sentences by the training voices (the ear, step 12)
  assistant  training.data.assistant_speech: English sentences in the assistant voice (codec, step 13)
  base       training.recipes.demo, steps 1-10 (codec, M0, SRH, both CTC stages, align, cocktail, GSPO)
  more       demo --continue_from base: 600 more stage-2 steps (step 11)
  ear        demo --continue_from more --general_speech: the ear retrained on general English (step 12)
  decoder    core.codec.units refit-decoder on the assistant sentences and the training replies,
             each reply round(sqrt(n)) times for the n items saying it (steps 13 and 17; 14-15 are
             settings a refit writes into codec/units_codec.json; the units, and so the tokens the
             later steps train on, are unchanged)
  festival   demo --continue_from decoder --extra_voices: the ear retrained with festival's voices (16)
  swaps      training.data.counterfactual --swap-probability 0.5: training questions with counterfactual
             replies and with other intents' true replies, speech targets only (step 18)
  reader     demo --continue_from festival --speech_delay 2 --text_input_scale 30: the speech taught to
             read the reply text, two steps behind it and at the speech's scale, on those items (18)

Each step writes its own folder under --work_root (the corpus goes to --corpus, the last checkpoint
to --out) and a marker in WORK_ROOT/done/ (its command and seconds) when it has finished; a rerun
skips the steps marked with the same command and stops at one marked with another (other counts or
folders would mix two settings), and the training steps also resume inside a step, so an interrupted
rebuild goes on where it stopped. On the 2-core CPU the steps took about 5 h in all (corpus ~35
min, base 2 h 11 min, more 22 min, ear 61 min, decoder 12 min, festival 43 min, swaps 1 min, reader
25-27 min); `--device cuda` runs the training stages on a GPU.
The result is the same recipe, not the same bits: CPU threading orders sums differently.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

STEPS = ("corpus", "general", "assistant", "base", "more", "ear", "decoder", "festival", "swaps", "reader")


@dataclass(frozen=True)
class Step:
    name: str
    module: str
    argv: tuple[str, ...]
    copy_from: Path | None = None  # the decoder step starts from a copy of this checkpoint

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, *self.argv]


def plan(args: argparse.Namespace) -> list[Step]:
    """The rebuild's steps, in order, with the model card's settings (`--scale` shrinks every count)."""
    corpus, root, threads = str(args.corpus), Path(args.work_root), str(args.threads)

    def n(count: int) -> str:
        return str(max(1, round(count * args.scale)))

    def demo(name: str, *flags: str, start: str = "") -> Step:
        source = ["--continue_from", str(root / start / "demo")] if start else []
        out = args.out if name == STEPS[-1] else root / name / "demo"
        common = ["--corpus", corpus, "--work_dir", str(root / name / "work"), "--out", str(out)]
        common += ["--threads", threads, "--device", args.device]
        return Step(name, "training.recipes.demo", (*common, *source, *flags))

    ear = ("--ctc_augment", "true", "--speech_augment", "true", "--continue_ctc_steps", n(3000))
    ear += ("--continue_adapter_ctc_steps", n(1000), "--continue_steps", n(600), "--gspo_steps", n(20))
    more = ("--speech_augment", "true", "--continue_steps", n(600), "--gspo_steps", n(20))
    steps = [
        Step(
            "corpus",
            "training.data.synth",
            ("--out", corpus, "--size", "full", "--extra-voice-copies", "1", "--extra-voices", "festival")
            + ("--workers", threads, *shlex.split(args.corpus_args)),
        ),
        Step(
            "general",
            "training.data.general_speech",
            ("--corpus", corpus, "--sentences", n(6000), "--vocabulary", "3000", "--workers", threads),
        ),
        Step(
            "assistant",
            "training.data.assistant_speech",
            ("--corpus", corpus, "--sentences", n(3000), "--workers", threads),
        ),
        demo(
            "base",
            *("--srh_steps", n(400), "--ctc_steps", n(3000), "--ctc_augment", "true"),
            *("--speech_augment", "true", "--adapter_ctc_steps", n(1000), "--align_steps", n(400)),
            *("--text_llm_steps", n(600), "--stage1_steps", n(1000), "--stage2_steps", n(250)),
            *("--gspo_steps", n(20), *shlex.split(args.demo_args)),
        ),
        demo("more", *more, start="base"),
        demo("ear", "--general_speech", "true", *ear, start="more"),
        Step(
            "decoder",
            "core.codec.units",
            ("refit-decoder", "--codec", str(root / "ear" / "demo" / "codec"))
            + ("--out", str(root / "decoder" / "demo" / "codec"), "--manifest", f"{corpus}/train.jsonl")
            + ("--manifest-repeat", "sqrt")
            + ("--wav-dir", f"{corpus}/audio/assistant_general", "--decoder-steps", n(2500))
            + ("--threads", threads),
            copy_from=root / "ear" / "demo",
        ),
        demo("festival", "--extra_voices", "true", *ear, start="decoder"),
        Step(
            "swaps",
            "training.data.counterfactual",
            ("--corpus", corpus, "--items", n(6000), "--swap-probability", "0.5", "--workers", threads),
        ),
        demo(
            "reader",
            *("--extra_voices", "true", "--counterfactual_items", n(6000), "--speech_delay", "2"),
            *("--text_input_scale", "30", *more),
            start="festival",
        ),
    ]
    assert tuple(s.name for s in steps) == STEPS
    return steps


def marker_path(step: Step, root: Path) -> Path:
    """The step's done-marker: its command (without the interpreter) and seconds."""
    return root / "done" / f"{step.name}.json"


def state(step: Step, root: Path) -> str:
    """todo, done, or changed: its marker holds another command (other settings or folders)."""
    marker = marker_path(step, root)
    if not marker.is_file():
        return "todo"
    return "done" if json.loads(marker.read_text()).get("command") == step.command()[1:] else "changed"


def run_step(step: Step, root: Path) -> None:
    """Runs one step and marks it done; a step done with the same command is skipped."""
    marker, status = marker_path(step, root), state(step, root)
    if status == "done":
        log.info("%s: done already (%s), skipped", step.name, marker)
        return
    if status == "changed":
        raise SystemExit(
            f"step {step.name!r} was done with another command ({marker}); its folders would mix two "
            "settings: use another --work_root, or delete the marker and the step's folder"
        )
    if step.copy_from is not None:  # the decoder step refits the codec of a copy of the previous checkpoint
        shutil.copytree(step.copy_from, result(step), dirs_exist_ok=True)
    log.info("%s: %s", step.name, shlex.join(step.command()))
    start = time.monotonic()
    done = subprocess.run(step.command(), check=False)
    if done.returncode != 0:
        raise SystemExit(
            f"step {step.name!r} failed (exit {done.returncode}); rerun the same command to resume"
        )
    marker.parent.mkdir(parents=True, exist_ok=True)
    seconds = round(time.monotonic() - start, 1)
    marker.write_text(json.dumps({"command": step.command()[1:], "seconds": seconds}, indent=1) + "\n")
    log.info("%s: finished in %.1f min", step.name, seconds / 60)


def main(argv: Sequence[str] | None = None) -> list[Step]:
    parser = argparse.ArgumentParser(
        prog="python -m training.recipes.demo_rebuild",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--corpus", default="data/corpus", help="corpus folder to build (default data/corpus)"
    )
    parser.add_argument(
        "--work_root", default="runs/rebuild", help="a folder per step (default runs/rebuild)"
    )
    parser.add_argument(
        "--out", default="runs/rebuild/demo", help="the rebuilt checkpoint (default runs/rebuild/demo)"
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads and TTS processes (default 2)")
    parser.add_argument("--device", default="auto", help="training stages: auto, cpu or cuda (default auto)")
    parser.add_argument(
        "--until", choices=STEPS, default=STEPS[-1], help=f"last step to run (default {STEPS[-1]})"
    )
    parser.add_argument("--dry_run", action="store_true", help="print the steps' commands and run nothing")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiplies every step and sentence count (tests; default 1)"
    )
    parser.add_argument("--corpus_args", default="", help="more synth flags, e.g. '--limit 8' (tests)")
    parser.add_argument(
        "--demo_args", default="", help="more flags of the base build, e.g. model sizes (tests)"
    )
    args = parser.parse_args(argv)
    if not 0 < args.scale <= 1 or args.threads < 1:
        parser.error(f"--scale must be in (0, 1] and --threads >= 1, got {args.scale} and {args.threads}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    steps = plan(args)[: STEPS.index(args.until) + 1]
    root = Path(args.work_root)
    for step in steps:
        if args.dry_run:
            done = {"todo": "", "done": " (done)", "changed": " (done with another command)"}[
                state(step, root)
            ]
            print(f"# {step.name}{done}\npython {shlex.join(step.command()[1:])}")
        else:
            run_step(step, root)
    if not args.dry_run:
        print(f"output: {result(steps[-1])}")
    return steps


def result(step: Step) -> Path:
    """Where a step's result lands: the corpus, or the step's checkpoint."""
    target = Path(step.argv[step.argv.index("--out") + 1]) if "--out" in step.argv else None
    if step.module.startswith("training.data."):
        return target or Path(step.argv[step.argv.index("--corpus") + 1])
    return target.parent if step.copy_from is not None else target


if __name__ == "__main__":
    main()
