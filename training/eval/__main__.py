"""Evaluate a DrVoice checkpoint on a spoken-QA manifest, per interaction mode (paper Table 4).

    python -m training.eval --checkpoint DIR --manifest FILE [--modes S2M,T2T] [--json] [--table]
        [--out items.jsonl] [--plot breakdown.png] [--limit N] [--train-manifest TRAIN.jsonl]

Prints the markdown table (rows = modes, Table 4 shape) by default; with --json, exactly one JSON
object on stdout instead (plus the table under "table" when --table is given too). When the manifest
records what each item holds out of training (the synthetic corpus does), the table is followed by
text accuracy per held-out group and per voice, and --plot draws the held-out groups as bars. With
--train-manifest, also text accuracy for questions made of words seen in training questions against
questions with a word no training question has (`by_vocabulary`).
With --rescore ITEMS.jsonl (an earlier run's --out), nothing is generated: the stored replies and
transcripts are judged again with today's answer matching (no --checkpoint needed).
Progress and logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from training.eval.breakdown import format_breakdown, plot_breakdown, training_vocabulary
from training.eval.harness import (
    ALL_MODES,
    Evaluator,
    evaluate,
    format_table,
    read_eval_manifest,
    read_results,
    rescore,
    write_results,
)


def parse_modes(values: Sequence[str]) -> list[str]:
    """ "S2M,T2T" / "S2M T2T" / "all" -> mode names (upper case, in the given order, no repeats)."""
    modes: list[str] = []
    for value in values:
        for name in value.replace(",", " ").split():
            names = ALL_MODES if name.lower() == "all" else (name.upper(),)
            modes.extend(n for n in names if n not in modes)
    return modes


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m training.eval", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="checkpoint directory (or hub id); not with --rescore")
    parser.add_argument("--manifest", required=True, help="JSONL with id, audio, text, answers, category")
    parser.add_argument("--modes", nargs="+", default=["all"], help="e.g. S2M,S2T,T2T or all (default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--table", action="store_true", help="print the markdown table (also inside --json)")
    parser.add_argument("--out", help="write per-item results (JSONL) here")
    parser.add_argument("--rescore", help="judge an earlier --out file again instead of generating")
    parser.add_argument("--plot", help="PNG of text accuracy per mode and held-out group (synth manifests)")
    parser.add_argument("--limit", type=int, help="only the first N manifest items")
    parser.add_argument(
        "--train-manifest",
        help="the training manifest: accuracy apart for questions with a word no training question has",
    )
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument(
        "--matmul",
        default="auto",
        choices=["auto", "fp32", "fp16", "bf16"],
        help="precision of the decoder's matrix products (auto: fp16 copies of fp32 weights on a CPU with several threads)",
    )
    # decoding settings: each one not given is what the checkpoint recommends for the mode (its
    # generation_config.json, else core.sampling.SamplingConfig's default); the JSON report records
    # the settings each mode used
    parser.add_argument("--max-new-steps", type=int, help="LLM steps per reply (5 Hz; default 600)")
    parser.add_argument("--temperature", type=float, help="text temperature (0 = greedy, the default)")
    parser.add_argument(
        "--speech-temperature", type=float, help="speech temperature (0 = greedy, the default)"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (when sampling; default 0)")
    parser.add_argument(
        "--no-follow-draft",
        action="store_true",
        help="STC/SAC: let the text head write the parallel text afresh instead of repeating the draft",
    )
    parser.add_argument(
        "--audio-views",
        type=int,
        help="speech modes: hear each question in this many tempo / mel-warp views (core.mel_views) and "
        "draw text from their mean log-probability, speech from their mean hidden state (1: the "
        "recording as it is; the demo checkpoint recommends 3)",
    )
    parser.add_argument(
        "--text-guide",
        type=float,
        help="S2M/T2M: weight in [0, 1] of the text-only twin (S2T/T2T) of the same question when the "
        "parallel text is drawn (0: off, the default; 1: the twin writes the text, the speech stays the "
        "speaking mode's own)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    import torch

    from core.engine import VoiceChatEngine
    from core.sampling import SamplingConfig

    torch.set_num_threads(args.threads)
    modes = parse_modes(args.modes)
    overrides = {
        "temperature": args.temperature,
        "speech_temperature": args.speech_temperature,
        "seed": args.seed,
        "max_new_steps": args.max_new_steps,
        "follow_draft": False if args.no_follow_draft else None,
        "audio_views": args.audio_views,
        "text_guide": args.text_guide,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        SamplingConfig(**overrides)  # out-of-range values refused before the model loads
        vocabulary = training_vocabulary(args.train_manifest) if args.train_manifest else None
        items = read_eval_manifest(args.manifest, args.limit, vocabulary)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    if args.rescore:
        try:
            stored = read_results(args.rescore)
            run = rescore(stored, items, None if args.modes == ["all"] else modes)
        except (ValueError, OSError) as exc:
            parser.error(str(exc))
        source = {"rescored": str(args.rescore)}
    else:
        if not args.checkpoint:
            parser.error("--checkpoint is required (unless --rescore)")
        engine = VoiceChatEngine.from_pretrained(args.checkpoint, device=args.device)
        engine.matmul = args.matmul
        engine.warm_up()  # the first item's timings are then those of a running app's, not first-call costs
        sampling = engine.sampling.replace(**overrides)  # the checkpoint's, per mode, with those given
        try:
            run = evaluate(Evaluator(engine, sampling), items, modes, progress=not args.quiet)
        except ValueError as exc:
            parser.error(str(exc))
        used = {mode: sampling.for_mode(mode).to_dict() for mode in modes}
        source = {"checkpoint": str(args.checkpoint), "sampling": used}
    report = {**source, "manifest": str(args.manifest), **run.report}
    if args.out:
        write_results(run.results, args.out)
    if args.plot:
        try:
            plot_breakdown(run.report, args.plot)
        except ValueError as exc:
            logging.getLogger(__name__).warning("--plot: %s", exc)
    if args.json:
        if args.table:
            report["table"] = full_table(run.report)
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(full_table(run.report) + "\n")
    return report


def full_table(report: dict) -> str:
    """The Table 4 shaped table, then text accuracy (%, n) per held-out group, voice and vocabulary group
    where known."""
    parts = [format_table(report)]
    for field, title in (
        ("by_heldout", "held out of training"),
        ("by_voice", "voice"),
        ("by_vocabulary", "the question's words (all in training questions, or not)"),
    ):
        table = format_breakdown(report, field)
        if table:
            parts.append(f"text accuracy (%) by {title}, (n):\n\n{table}")
    return "\n\n".join(parts)


if __name__ == "__main__":
    main()
