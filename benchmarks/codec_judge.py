"""How much of the judge's ASR-WER the speech codec alone costs: original replies vs their resynthesis.

    python -m benchmarks.codec_judge --manifest runs/demo/test.tokens.jsonl --codec checkpoints/demo/codec

For distinct reply texts of a tokenised manifest (`reply_audio` + `reply_tokens`, as
`training.data.tokenize` writes them), the pocketsphinx judge transcribes the original recording and
the codec's decoding of its tokens. Prints one JSON object: replies, original and resynthesis WER
(pooled), and how often the accepted answer is heard in each, per distinct reply and per manifest
item (`*_items`: each reply counted as often as the manifest asks for it, which is what a model that
says every reply right would score as `training.eval`'s speech_accuracy and asr_wer on that
manifest: the judge's ceiling through the original voice and through this codec); `per_reply`
lists each reply with its item count and what was heard. The gap between a model's generated
speech and the original (`training.eval`'s asr_wer vs asr_wer_reference) minus this codec gap is what
the model's own speech tokens cost.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
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
    rows, count = [], Counter()
    for item in read_manifest(manifest):  # reply_audio resolved against the manifest's folder
        if item.reply_tokens and item.reply_audio:
            count[item.reply_text] += 1
            if count[item.reply_text] == 1:
                rows.append(item)
    if not rows:
        raise ValueError(f"{manifest} has no items with reply_audio and reply_tokens (tokenise it first)")
    rows = rows[:: max(1, len(rows) // replies)][:replies]  # spread over the manifest's intents
    per_reply = []
    for row in tqdm(rows, desc="replies", file=sys.stderr):
        original = load_audio(row.reply_audio, min_seconds=0.0, silence_threshold_dbfs=None)
        resynthesis = Waveform(codec.decode(row.reply_tokens), codec.sample_rate)
        heard = {"original": transcribe(original), "codec": transcribe(resynthesis)}
        entry = {"text": row.reply_text, "items": count[row.reply_text]}
        for name, transcript in heard.items():
            entry[f"{name}_errors"], entry["words"] = word_errors(row.reply_text, transcript)
            entry[name] = transcript
            entry[f"{name}_heard"] = contains_answer(transcript, row.answers, row.text)
        per_reply.append(entry)
    n, items = len(rows), sum(e["items"] for e in per_reply)
    result = {"replies": n, "items": items}
    for name in ("original", "codec"):
        for suffix, weight in (("", lambda e: 1), ("_items", lambda e: e["items"])):
            errors = sum(e[f"{name}_errors"] * weight(e) for e in per_reply)
            result[f"{name}_wer{suffix}"] = errors / sum(e["words"] * weight(e) for e in per_reply)
            heard = sum(e[f"{name}_heard"] * weight(e) for e in per_reply)
            result[f"{name}_answer_heard{suffix}"] = heard / sum(weight(e) for e in per_reply)
    return {**result, "per_reply": per_reply}


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
