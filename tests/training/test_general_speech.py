"""Tests of the general-vocabulary speech for the ear (training/data/general_speech.py), rendered with
the real TTS programs (skipped with the reason shown where flite / espeak-ng are missing; CI installs
both)."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest
import soundfile as sf

from training.data.general_speech import english_vocabulary, main, sentences
from training.data.synth import main as synth

needs_tts = pytest.mark.skipif(
    shutil.which("flite") is None or shutil.which("espeak-ng") is None,
    reason="flite and espeak-ng are not installed (apt-get install flite espeak-ng); CI installs them",
)


def test_vocabulary_is_frequent_plain_words():
    words = english_vocabulary(500)
    assert len(words) == len(set(words)) == 500
    assert words[:3] == ["the", "to", "and"]  # most frequent first
    assert all(w.isalpha() and w.islower() for w in words)
    assert {w for w in words if len(w) == 1} <= {"a", "i"}
    assert {"who", "many", "more"} <= set(words) and "zygote" not in words


def test_sentences_are_deterministic_and_reach_the_tail():
    words = english_vocabulary(300)
    texts = sentences(words, 400, seed=1)
    assert texts == sentences(words, 400, seed=1) and texts != sentences(words, 400, seed=2)
    lengths = Counter(len(t.split()) for t in texts)
    assert min(lengths) == 3 and max(lengths) == 8
    assert all(t[0].isupper() and t[-1] in ".?" for t in texts)
    assert 0.2 < sum(t.endswith("?") for t in texts) / len(texts) < 0.5
    used = Counter(w.lower().strip(".?") for t in texts for w in t.split())
    assert set(used) <= set(words)
    assert sum(1 for w in words[150:] if used[w]) > 100  # rarer half drawn too (rank^-0.5, not Zipf)


@needs_tts
def test_general_speech_uses_only_training_voices(tmp_path):
    from training.data.manifest import read_manifest

    corpus = tmp_path / "corpus"
    synth(["--out", str(corpus), "--limit", "2", "--multiturn", "2", "--workers", "2"])
    summary = main(["--corpus", str(corpus), "--sentences", "12", "--vocabulary", "200"])
    info = json.loads((corpus / "corpus.json").read_text())
    items = read_manifest(corpus / "general.jsonl")
    assert len(items) == 12 and summary["sentences"] == 12
    assert {i.voice for i in items} <= set(info["user_voices"]["train"])
    assert not {i.voice for i in items} & set(info["user_voices"]["heldout"])
    assert len({i.voice for i in items}) == min(12, len(info["user_voices"]["train"]))  # taken in turn
    for item in items:
        assert item.reply_text == "" and item.category == "general" and item.text
        wav = sf.info(str(item.audio))
        assert (wav.samplerate, wav.channels) == (16000, 1) and wav.duration > 0.5
    assert main(["--corpus", str(corpus), "--sentences", "12", "--vocabulary", "200"])["rendered_files"] == 0


def test_cli_needs_a_corpus(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--corpus", str(tmp_path)])
    assert "corpus.json" in capsys.readouterr().err
