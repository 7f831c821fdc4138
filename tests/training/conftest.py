"""Tiny end-to-end assets for the recipe tests: a spoken-QA manifest, a units codec, a checkpoint."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

QA = [
    ("what is two plus two?", "two plus two is four.", ["4", "four"]),
    ("what is the capital of france?", "the capital of france is paris.", ["paris"]),
    ("what day comes after monday?", "the day after monday is tuesday.", ["tuesday"]),
    ("what is three plus four?", "three plus four is seven.", ["7", "seven"]),
]


@dataclass
class TinyAssets:
    root: Path
    manifest: Path  # tokenised training manifest (reply_tokens filled)
    init: Path  # a tiny core checkpoint with the units codec
    base_llm: Path  # a second tiny checkpoint standing for the base LLM M0


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory) -> TinyAssets:
    import soundfile as sf

    from core.checkpoint import save_pretrained
    from core.codec.units import UnitsCodec
    from core.text_tokenizer import train_bpe_tokenizer
    from tests.core.conftest import flite_speech, make_model

    root = tmp_path_factory.mktemp("tiny_assets")
    (root / "wav").mkdir()
    replies = [flite_speech(r) for _, r, _ in QA]
    codec = UnitsCodec.fit(replies, 32, kmeans_iters=5)
    lines = []
    for i, ((question, reply, answers), reply_wav) in enumerate(zip(QA, replies, strict=True)):
        user = flite_speech(question, voice="kal")
        sf.write(root / "wav" / f"q{i}.wav", user.samples, user.sample_rate)
        sf.write(root / "wav" / f"a{i}.wav", reply_wav.samples, reply_wav.sample_rate)
        lines.append(
            {
                "id": f"qa-{i}",
                "text": question,
                "audio": f"wav/q{i}.wav",
                "reply_text": reply,
                "reply_audio": f"wav/a{i}.wav",
                "reply_tokens": codec.encode(reply_wav).tolist(),
                "answers": answers,
                "category": "test",
            }
        )
    manifest = root / "train.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    tokenizer = train_bpe_tokenizer([q for q, _, _ in QA] + [r for _, r, _ in QA], vocab_size=400)
    init = save_pretrained(
        root / "init", make_model(tokenizer, seed=1, speech_vocab=32), tokenizer, codec=codec
    )
    base = save_pretrained(
        root / "base", make_model(tokenizer, seed=2, speech_vocab=32), tokenizer, codec=codec
    )
    return TinyAssets(root, manifest, init, base)
