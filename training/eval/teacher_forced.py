"""Teacher-forced losses of a checkpoint on a tokenised manifest: training's loss on held-out items.

    python -m training.eval.teacher_forced --checkpoint DIR --manifest M.tokens.jsonl --modes T2M,T2T

`python -m training.eval` generates replies and judges them; this measures how well the model
predicts given replies, token by token, exactly as training scores them (the text head's and the
SRH's mean cross-entropy per target token, paper eq. 8 and 6), per mode and per category. On replies
the model never saw it tells whether the speech stream has learnt to say a text or only the replies
it was trained on: the demo checkpoint's speech loss is ~0.002 per token on its training number
replies and ~3.6 on the counterfactual replies of `training.data.counterfactual` (the same
questions, other numbers). An item with `"text_target": false` adds speech tokens only.

Items go through CoM-Mixing's `make_sample` (variants an item cannot make are skipped and counted);
speech-input modes compute the user log-mels from the audio files.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from core.modes import MODE_NAMES, get_mode
from core.sequence import SequenceBuilder, collate
from training.data.com_mixing import make_sample, missing_input
from training.data.manifest import ManifestItem

logger = logging.getLogger(__name__)


def _empty() -> dict[str, float]:
    return {"samples": 0, "text_sum": 0.0, "text_tokens": 0, "speech_sum": 0.0, "speech_tokens": 0}


def _finish(acc: dict[str, float]) -> dict[str, float | int | None]:
    return {
        "samples": acc["samples"],
        "text_loss": acc["text_sum"] / acc["text_tokens"] if acc["text_tokens"] else None,
        "text_tokens": acc["text_tokens"],
        "speech_loss": acc["speech_sum"] / acc["speech_tokens"] if acc["speech_tokens"] else None,
        "speech_tokens": acc["speech_tokens"],
    }


@torch.no_grad()
def teacher_forced_losses(
    model,
    tokenizer,
    items: Sequence[ManifestItem],
    modes: Sequence[str],
    audio_features: Callable | None = None,
    progress: bool = False,
) -> dict:
    """Per mode: samples, mean text / speech loss per token and token counts, overall and by
    category (None where a mode has no such tokens), plus the variants skipped and why."""
    model.eval()
    builder = SequenceBuilder(model.config, tokenizer)
    pad, speech_pad = tokenizer.pad_token_id, model.config.speech_pad
    report: dict = {}
    for mode in (get_mode(m).name for m in modes):
        total, by_category, skipped = _empty(), defaultdict(_empty), defaultdict(int)
        for item in tqdm(items, desc=f"teacher-forced {mode}", disable=not progress):
            reason = missing_input(item, mode)
            if reason is not None:
                skipped[reason] += 1
                continue
            example = builder.example(make_sample(item, mode, audio_features))
            out = model(collate([example], pad, speech_pad).to(model.device))
            for acc in (total, by_category[item.category or "none"]):
                acc["samples"] += 1
                acc["text_sum"] += float(out.text_loss) * out.text_tokens
                acc["text_tokens"] += out.text_tokens
                acc["speech_sum"] += float(out.speech_loss) * out.speech_tokens
                acc["speech_tokens"] += out.speech_tokens
        report[mode] = {
            **_finish(total),
            "skipped": dict(skipped),
            "by_category": {c: _finish(a) for c, a in sorted(by_category.items())},
        }
    return report


def mel_features(n_mels: int) -> Callable[[Path], torch.Tensor]:
    """User-audio path -> Whisper log-mel, computed from the file."""
    from core.audio import load_audio
    from core.encoder import log_mel

    return lambda path: log_mel(load_audio(path), n_mels)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.eval.teacher_forced",
        description="Teacher-forced text and speech loss per token of a checkpoint on a tokenised manifest "
        "(reply_tokens filled), per mode and category.",
    )
    parser.add_argument("--checkpoint", required=True, help="DrVoice checkpoint folder (or hub id)")
    parser.add_argument(
        "--manifest", required=True, help="JSONL manifest with reply_tokens (training.data.tokenize)"
    )
    parser.add_argument(
        "--modes", default="T2M,T2T", help=f"comma-separated, or 'all' ({','.join(MODE_NAMES)})"
    )
    parser.add_argument("--limit", type=int, default=None, help="first N items only")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from core.checkpoint import from_pretrained
    from training.data import read_manifest

    try:
        modes = list(MODE_NAMES) if args.modes.strip().lower() == "all" else args.modes.split(",")
        modes = [get_mode(m).name for m in modes]
        items = read_manifest(args.manifest)[: args.limit]
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    torch.set_num_threads(args.threads)
    ckpt = from_pretrained(args.checkpoint)
    model = ckpt.model.float()
    features = None
    if model.config.user_audio == "continuous":
        features = mel_features(model.config.encoder["n_mels"])
    elif any(get_mode(m).speech_input for m in modes):
        parser.error("speech-input modes need a checkpoint with continuous user audio (log-mels)")
    report = teacher_forced_losses(model, ckpt.tokenizer, items, modes, features, progress=True)
    if args.json:
        print(json.dumps({"checkpoint": args.checkpoint, "manifest": args.manifest, "modes": report}))
        return
    for mode, r in report.items():
        print(
            f"{mode}: {r['samples']} samples, text {_fmt(r['text_loss'])} / speech {_fmt(r['speech_loss'])}"
        )
        for category, c in r["by_category"].items():
            print(
                f"  {category}: {c['samples']} samples, text {_fmt(c['text_loss'])} / speech {_fmt(c['speech_loss'])}"
            )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
