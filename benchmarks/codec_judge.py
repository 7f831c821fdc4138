"""How much of the judge's ASR-WER the speech codec alone costs: original replies vs their resynthesis.

    python -m benchmarks.codec_judge --manifest runs/demo/test.tokens.jsonl --codec checkpoints/demo/codec

For distinct reply texts of a tokenised manifest (`reply_audio` + `reply_tokens`, as
`training.data.tokenize` writes them), the pocketsphinx judge transcribes the original recording and
the codec's decoding of its tokens. Prints one JSON object: replies, original and resynthesis WER
(pooled), and how often the accepted answer is heard in each. The gap between a model's generated
speech and the original (`training.eval`'s asr_wer vs asr_wer_reference) minus this codec gap is what
the model's own speech tokens cost.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm


def measure(manifest: Path, codec_dir: Path, replies: int) -> dict:
    from core.audio import load_audio
    from core.codec.units import UnitsCodec
    from core.types import Waveform
    from training.data import read_manifest
    from training.eval.asr import transcribe
    from training.eval.scoring import contains_answer, word_errors

    codec = UnitsCodec.load(codec_dir)
    rows, seen = [], set()
    for item in read_manifest(manifest):  # reply_audio resolved against the manifest's folder
        if item.reply_tokens and item.reply_audio and item.reply_text not in seen:
            seen.add(item.reply_text)
            rows.append(item)
    if not rows:
        raise ValueError(f"{manifest} has no items with reply_audio and reply_tokens (tokenise it first)")
    rows = rows[:: max(1, len(rows) // replies)][:replies]  # spread over the manifest's intents
    totals = {"words": 0, "original_errors": 0, "codec_errors": 0, "original_answer": 0, "codec_answer": 0}
    for row in tqdm(rows, desc="replies", file=sys.stderr):
        original = load_audio(row.reply_audio, min_seconds=0.0, silence_threshold_dbfs=None)
        resynthesis = Waveform(codec.decode(row.reply_tokens), codec.sample_rate)
        heard = {"original": transcribe(original), "codec": transcribe(resynthesis)}
        for name, transcript in heard.items():
            errors, words = word_errors(row.reply_text, transcript)
            totals[f"{name}_errors"] += errors
            totals[f"{name}_answer"] += contains_answer(transcript, row.answers)
        totals["words"] += words
    n = len(rows)
    return {
        "replies": n,
        "original_wer": totals["original_errors"] / totals["words"],
        "codec_wer": totals["codec_errors"] / totals["words"],
        "original_answer_heard": totals["original_answer"] / n,
        "codec_answer_heard": totals["codec_answer"] / n,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--manifest", required=True, type=Path, help="tokenised manifest (reply_audio + reply_tokens)"
    )
    p.add_argument(
        "--codec", required=True, type=Path, help="units codec folder (e.g. checkpoints/demo/codec)"
    )
    p.add_argument("--replies", type=int, default=100, help="distinct reply texts to judge")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(json.dumps(measure(args.manifest, args.codec, args.replies), indent=2))


if __name__ == "__main__":
    main()
