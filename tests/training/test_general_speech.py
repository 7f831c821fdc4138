"""Tests of the general-vocabulary speech for the ear (training/data/general_speech.py), rendered with
the real TTS programs (skipped with the reason shown where flite / espeak-ng are missing; CI installs
both)."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter

import pytest
import soundfile as sf

from training.data.general_speech import english_vocabulary, main, question_vocabulary, sentences
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


def test_question_vocabulary_keeps_the_form_a_word_takes_inside_a_question(tmp_path):
    manifest = tmp_path / "train.jsonl"
    questions = ["What is the capital of France?", "Hi there!", "Tell me what Tuesday is.", "Thanks, bye!"]
    manifest.write_text("".join(json.dumps({"text": q}) + "\n" for q in questions))
    words = question_vocabulary(manifest)
    # "what" occurs inside a question in lower case; "Hi", "Tell", "Thanks" only open one; names stay
    assert words == sorted(
        [
            "France",
            "Hi",
            "Tell",
            "Thanks",
            "Tuesday",
            "bye",
            "capital",
            "is",
            "me",
            "of",
            "the",
            "there",
            "what",
        ]
    )
    manifest.write_text("")
    with pytest.raises(ValueError, match="no question words"):
        question_vocabulary(manifest)


def test_uniform_sentences_draw_every_word_alike():
    words = [f"w{i}" for i in range(20)]
    uniform = Counter(
        w.lower().strip(".?") for t in sentences(words, 2000, 0, uniform=True) for w in t.split()
    )
    ranked = Counter(w.lower().strip(".?") for t in sentences(words, 2000, 0) for w in t.split())
    assert max(uniform.values()) < 1.3 * min(uniform.values())  # ~550 each
    assert ranked["w0"] > 2.5 * ranked["w19"]  # rank^-0.5: 1 against 20^-0.5


@needs_tts
def test_question_words_are_the_training_questions_words_in_new_orders(tmp_path):
    from training.data.manifest import read_manifest

    corpus = tmp_path / "corpus"
    synth(["--out", str(corpus), "--limit", "2", "--multiturn", "2", "--workers", "2"])
    summary = main(["--corpus", str(corpus), "--words", "questions", "--sentences", "10"])
    train_words = {
        w.lower() for i in read_manifest(corpus / "train.jsonl") for w in re.findall("[A-Za-z]+", i.text)
    }
    items = read_manifest(corpus / "question_words.jsonl")
    assert len(items) == 10 and summary["words"] == "questions" and summary["rendered_files"] == 10
    assert not (corpus / "general.jsonl").exists()
    heldout = set(json.loads((corpus / "corpus.json").read_text())["user_voices"]["heldout"])
    for item in items:
        assert {w.lower() for w in re.findall("[A-Za-z]+", item.text)} <= train_words
        assert item.category == "question_words" and item.voice not in heldout
        assert "question_words" in str(item.audio) and sf.info(str(item.audio)).duration > 0.3
    questions = {i.text for i in read_manifest(corpus / "train.jsonl")}
    assert not {i.text for i in items} & questions


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
