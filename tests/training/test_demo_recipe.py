"""The demo pipeline's data stage on a few rendered items (training/recipes/demo.py)."""

from __future__ import annotations

import json
import shutil

import pytest

from training.recipes import demo

needs_tts = pytest.mark.skipif(
    shutil.which("flite") is None or shutil.which("espeak-ng") is None,
    reason="flite and espeak-ng are not installed (apt-get install flite espeak-ng); CI installs them",
)


def _cfg(corpus, work, **kw):
    tiny = dict(text_vocab_size=400, num_units=16, codec_decoder_steps=2, llm_hidden=32, llm_heads=2)
    return demo.DemoConfig(
        corpus=str(corpus), work_dir=str(work), stop_after="prepare", threads=1, **tiny, **kw
    )


@needs_tts
def test_extra_voices_join_the_speech_training_manifest(tmp_path):
    from training.data.synth import main as synth

    corpus = tmp_path / "corpus"
    synth(["--out", str(corpus), "--limit", "4", "--multiturn", "2", "--workers", "2"])
    with pytest.raises(FileNotFoundError, match="--extra-voice-copies"):
        demo.run(_cfg(corpus, tmp_path / "work", extra_voices=True))

    synth(
        [
            "--out",
            str(corpus),
            "--limit",
            "4",
            "--multiturn",
            "2",
            "--workers",
            "2",
            "--extra-voice-copies",
            "1",
        ]
    )
    work = tmp_path / "work"
    demo.run(_cfg(corpus, work, extra_voices=True))
    rows = lambda name: [json.loads(x) for x in (work / name).read_text().splitlines()]  # noqa: E731
    train, extra, speech = (
        rows("train.tokens.jsonl"),
        rows("train_extra.tokens.jsonl"),
        rows(demo.SPEECH_TRAIN),
    )
    assert [r["id"] for r in speech] == [r["id"] for r in train] + [r["id"] for r in extra]
    assert len(extra) == 4 and all(r["id"].endswith("-x1") for r in extra)
    for copy, source in zip(extra, train, strict=True):  # same reply tokens, another recording
        assert copy["reply_tokens"] == source["reply_tokens"] and copy["audio"] != source["audio"]
    assert len(list((work / "mels").rglob("*.safetensors"))) >= len(train) + len(extra)  # mels cached
