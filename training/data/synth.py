"""Builds the synthetic spoken-QA corpus: questions spoken by many TTS voices, replies by one.

    python -m training.data.synth --out data/synth --size full --workers 2

Output folder:
    train.jsonl, validation.jsonl, test.jsonl   one sample per line (format below)
    train_extra.jsonl                           with --extra-voice-copies N: every train item again,
                                                N times, by more espeak-ng voices (training only;
                                                --extra-voices festival,vocoded: other voice sets,
                                                N copies each)
    multiturn.jsonl                             a few conversations (history filled), key "split"
    corpus.json                                 summary: counts per split / category / voice, held-outs
    audio/<split>/<id>_<hash>.wav               user questions, 16 kHz mono PCM-16
    replies/<hash>.wav                          assistant replies (flite slt), one file per reply text

Manifest line (paths relative to the manifest's folder):
    {"id", "text" (typed question = transcript), "audio", "reply_text", "reply_audio",
     "reply_tokens": null, "system": null, "history": [], "answers", "category", "voice", "intent",
     "phrasing" ("<intent>.<template index>"), "heldout" (which factors are unseen in training:
     "combo", "phrasing", "voice"), "prosody" ({"rate", "pitch", "peak"} of the user rendering)}

Splits (all deterministic given --seed):
- voices: `--heldout-voices` (default one flite and one espeak-ng voice) never speak in train;
- phrasings: one template per intent (drawn by seed) never appears in train;
- combos: for intents whose answer can be worked out rather than recalled (arithmetic, next /
  previous number) a fraction of the operand combos is held out, half for validation, half for
  test (plus/times by unordered pair, the two number intents share their held-out numbers). Facts
  (capitals, opposites, days, months) and small talk cannot be inferred, so their validation/test
  items differ from training by phrasing and voice only.
Validation/test items alternate between held-out and training phrasings and voices, so every
combination of the factors is measured.

Numbers are words everywhere (see `training.data.qa_domain`). Files that already exist are not
rendered again (their names hash the text and voice settings), so an interrupted build resumes.

Modules: `qa_domain` (intents, phrasings, replies), `synth_plan` (splits and manifest records, no
I/O), `tts` (the voices, `speak_assistant`), this one (rendering, corpus.json, CLI).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from training.data.qa_domain import INTENTS, INTENTS_BY_NAME
from training.data.synth_plan import (
    SIZES,
    SPLITS,
    CorpusPlan,
    SplitPlan,
    SynthConfig,
    plan_corpus,
    plan_splits,
    reply_audio_path,
)
from training.data.tts import ASSISTANT_VOICE, USER_VOICES, Prosody, synthesize

logger = logging.getLogger(__name__)

__all__ = [
    "SIZES",
    "SPLITS",
    "CorpusPlan",
    "SplitPlan",
    "SynthConfig",
    "TTSJob",
    "build_corpus",
    "main",
    "plan_corpus",
    "plan_splits",
    "render_audio",
    "reply_audio_path",
    "summarize",
    "tts_jobs",
    "user_job",
]

# ---------------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class TTSJob:
    path: str  # relative to the output folder
    text: str
    voice: str
    prosody: Prosody
    peak: float | None  # peak level to normalise to (None: keep the engine's level)


def user_job(text: str, path: str, voice: str, prosody: dict) -> TTSJob:
    """The rendering of a user turn; `prosody` as in manifest records ({"rate", "pitch", "peak"})."""
    return TTSJob(path, text, voice, Prosody(prosody["rate"], prosody["pitch"]), prosody["peak"])


def tts_jobs(corpus: CorpusPlan) -> list[TTSJob]:
    """Every audio file the corpus needs (each path once)."""
    jobs: dict[str, TTSJob] = {}

    def user(text: str, path: str, voice: str, prosody: dict) -> None:
        jobs.setdefault(path, user_job(text, path, voice, prosody))

    def assistant(text: str, path: str) -> None:
        jobs.setdefault(path, TTSJob(path, text, ASSISTANT_VOICE.name, Prosody(), None))

    for item in (r for items in corpus.splits.values() for r in items):
        user(item["text"], item["audio"], item["voice"], item["prosody"])
        assistant(item["reply_text"], item["reply_audio"])
    for conv in corpus.multiturn:
        for turn, prosody in zip(conv["history"], conv["history_prosody"], strict=True):
            user(turn["text"], turn["audio"], conv["voice"], prosody)
            assistant(turn["reply_text"], turn["reply_audio"])
        user(conv["text"], conv["audio"], conv["voice"], conv["prosody"])
        assistant(conv["reply_text"], conv["reply_audio"])
    return list(jobs.values())


def _render(job: TTSJob, out: Path) -> None:
    from core.audio import save_wav
    from core.types import Waveform

    waveform = synthesize(job.text, job.voice, job.prosody)
    samples = waveform.samples
    if job.peak is not None and len(samples):
        samples = samples * (job.peak / max(float(np.abs(samples).max()), 1e-4))
    target = out / job.path
    tmp = target.with_name(target.stem + ".part.wav")
    save_wav(tmp, Waveform(samples.astype(np.float32), waveform.sample_rate))
    os.replace(tmp, target)  # atomic: an interrupted build never leaves a truncated file behind


def render_audio(jobs: list[TTSJob], out: Path, workers: int, progress: bool = True) -> int:
    """Renders the jobs whose file is missing; returns how many were rendered."""
    from tqdm.auto import tqdm

    todo = [j for j in jobs if not (out / j.path).exists()]
    logger.info("%d audio files, %d to render", len(jobs), len(todo))
    for folder in {(out / j.path).parent for j in todo}:
        folder.mkdir(parents=True, exist_ok=True)
    # threads suffice: each job spends its time in a TTS subprocess or in torch's resampler
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in tqdm(
            pool.map(lambda j: _render(j, out), todo), total=len(todo), desc="TTS", disable=not progress
        ):
            pass
    return len(todo)


def _duration(path: Path) -> float:
    import soundfile as sf

    return sf.info(str(path)).duration


def summarize(config: SynthConfig, corpus: CorpusPlan, out: Path, seconds: float, rendered: int) -> dict:
    """The corpus.json summary."""
    counts = {}
    for split, items in corpus.splits.items():
        counts[split] = {
            "items": len(items),
            "category": dict(Counter(r["category"] for r in items)),
            "intent": dict(Counter(r["intent"] for r in items)),
            "voice": dict(sorted(Counter(r["voice"] for r in items).items())),
            "heldout": dict(Counter("+".join(r["heldout"]) or "none" for r in items)),
            "user_audio_hours": round(sum(_duration(out / r["audio"]) for r in items) / 3600, 4),
        }
    plan = corpus.plan
    return {
        "config": {k: v for k, v in asdict(config).items() if k not in ("out", "workers")},
        "number_convention": "words (US style, no hyphens): 'Three plus four is seven.'",
        "sample_rate": 16000,
        "assistant_voice": ASSISTANT_VOICE.name,
        "user_voices": {"train": plan.voices["train"], "heldout": plan.voices["heldout"]},
        "heldout_phrasings": {
            name: f"{name}.{p} {INTENTS_BY_NAME[name].phrasings[p]!r}"
            for name, p in plan.heldout_phrasing.items()
        },
        "heldout_combos": {
            i.name: {s: plan.combos[i.name][s] for s in ("validation", "test")}
            for i in INTENTS
            if i.holdout_combos
        },
        "counts": counts,
        "multiturn": dict(Counter(c["split"] for c in corpus.multiturn)),
        "reply_audio_files": len({r["reply_audio"] for items in corpus.splits.values() for r in items}),
        "rendered_files": rendered,
        "build_seconds": round(seconds, 1),
    }


def build_corpus(config: SynthConfig, progress: bool = True) -> dict:
    """Plans, renders and writes the corpus into `config.out`; returns the corpus.json summary."""
    start = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = plan_corpus(config)
    rendered = render_audio(tts_jobs(corpus), out, config.workers, progress)
    for split, items in corpus.splits.items():
        _write_jsonl(out / f"{split}.jsonl", items)
    _write_jsonl(
        out / "multiturn.jsonl",
        [{k: v for k, v in c.items() if k != "history_prosody"} for c in corpus.multiturn],
    )
    summary = summarize(config, corpus, out, time.perf_counter() - start, rendered)
    (out / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def read_corpus(corpus: Path) -> tuple[dict, list[dict]]:
    """A built corpus's summary (corpus.json) and its train.jsonl records; FileNotFoundError naming
    the command that builds it when either is missing."""
    meta_path, train_path = corpus / "corpus.json", corpus / "train.jsonl"
    for path in (meta_path, train_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: build the corpus first (python -m training.data.synth)"
            )
    train = [json.loads(line) for line in train_path.read_text().splitlines() if line.strip()]
    return json.loads(meta_path.read_text()), train


def _write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(".jsonl.part")
    with open(tmp, "w") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> SynthConfig:
    parser = argparse.ArgumentParser(
        prog="python -m training.data.synth",
        description="Build the synthetic spoken-QA corpus (flite + espeak-ng questions, flite slt replies).",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--size", choices=sorted(SIZES), default="small", help="preset sizes (default small)")
    parser.add_argument("--per-intent", type=int, help="training items per intent (overrides --size)")
    parser.add_argument("--eval-per-intent", type=int, help="validation and test items per intent (each)")
    parser.add_argument("--multiturn", type=int, help="training conversations (validation/test get a tenth)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="parallel TTS processes")
    parser.add_argument("--limit", type=int, help="only the first N items and conversations of each split")
    parser.add_argument(
        "--heldout-voices",
        default=",".join(SynthConfig.heldout_voices),
        help="comma-separated user voices kept out of train; choose from "
        + ", ".join(v.name for v in USER_VOICES),
    )
    parser.add_argument("--heldout-combo-fraction", type=float, default=SynthConfig.heldout_combo_fraction)
    parser.add_argument(
        "--extra-voice-copies",
        type=int,
        default=0,
        help="render every train item N more times by extra voices (train_extra.jsonl); "
        "validation, test and the held-out voices are unchanged",
    )
    parser.add_argument(
        "--extra-voices",
        default="espeak",
        help="the extra voice sets, comma-separated, each rendering --extra-voice-copies copies: espeak (ten "
        "more espeak-ng variants), festival (festival's ked and three vocal-tract warps of its HTS slt; apt-get "
        "install festival festvox-kdlpc16k festvox-us-slt-hts), vocoded (flite and festival voices resynthesised "
        "by the WORLD vocoder with another pitch and vocal tract) (default espeak)",
    )
    args = parser.parse_args(argv)
    per_intent, eval_per_intent, multiturn = SIZES[args.size]
    try:
        return SynthConfig(
            out=args.out,
            seed=args.seed,
            per_intent=args.per_intent or per_intent,
            eval_per_intent=args.eval_per_intent
            or (max(2, args.per_intent // 10) if args.per_intent else eval_per_intent),
            multiturn=args.multiturn if args.multiturn is not None else multiturn,
            heldout_voices=tuple(v.strip() for v in args.heldout_voices.split(",") if v.strip()),
            heldout_combo_fraction=args.heldout_combo_fraction,
            extra_voice_copies=args.extra_voice_copies,
            extra_voices=args.extra_voices,
            workers=args.workers,
            limit=args.limit,
        )
    except ValueError as exc:
        parser.error(str(exc))


def main(argv: Sequence[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(1)  # resampling threads would fight the TTS processes for the cores
    config = parse_args(argv)
    summary = build_corpus(config)
    counts = ", ".join(f"{s} {c['items']}" for s, c in summary["counts"].items())
    logger.info(
        "wrote %s: %s items, %s; %.1f s", config.out, counts, summary["multiturn"], summary["build_seconds"]
    )
    return summary


if __name__ == "__main__":
    main()
