"""Tests of the extra question phrasings (training/data/paraphrases.py): none borrows from a held-out
phrasing, items keep their training item's operands, reply and voice, and the command renders them with
the real TTS programs (skipped with the reason shown where flite / espeak-ng are missing; CI installs
both)."""

from __future__ import annotations

import json
import shutil

import pytest
import soundfile as sf

from training.data.paraphrases import (
    EXTRA_PHRASINGS,
    allowed_phrasings,
    borrowing,
    build_items,
    heldout_indices,
    main,
    words,
)
from training.data.qa_domain import INTENTS, INTENTS_BY_NAME, intent_fields, render
from training.data.synth_plan import SynthConfig, plan_splits

needs_tts = pytest.mark.skipif(
    shutil.which("flite") is None or shutil.which("espeak-ng") is None,
    reason="flite and espeak-ng are not installed (apt-get install flite espeak-ng); CI installs them",
)
HELDOUT = plan_splits(
    SynthConfig(out="corpus")
).heldout_phrasing  # the held-out phrasings of the default corpus


def test_every_intent_gets_eight_new_phrasings_with_its_slots():
    assert set(EXTRA_PHRASINGS) == {i.name for i in INTENTS}
    for intent in INTENTS:
        extra = EXTRA_PHRASINGS[intent.name]
        assert len(extra) == len(set(extra)) == 8
        assert not set(extra) & set(intent.phrasings)
        slots = {w for w in words(intent.phrasings[0]) if w.startswith("{")}
        for template in extra:
            assert {w for w in words(template) if w.startswith("{")} == slots, template


def test_no_extra_phrasing_borrows_from_the_default_corpus_heldout_ones():
    assert borrowing(EXTRA_PHRASINGS, HELDOUT) == {}
    assert allowed_phrasings(EXTRA_PHRASINGS, HELDOUT) == EXTRA_PHRASINGS


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("If today is {x}, what day is tomorrow?", "tomorrow"),  # a word only a held-out phrasing has
        ("I want to know what is the number before {x}.", "is the number"),  # a held-out run of words
        ("How are you?", "a held-out phrasing"),  # every word known ("How are you doing today?")
    ],
)
def test_borrowing_is_found(template, why):
    held = {"day_after": 3, "previous_number": 1, "how_are_you": 0}
    assert why in borrowing({"day_after": (template,)}, held)[template]
    assert borrowing({"day_after": (template,)}, {}) == {}  # nothing held out: nothing to borrow


def test_another_corpus_leaves_out_what_would_borrow_from_its_heldout_phrasings():
    held = plan_splits(SynthConfig(out="corpus", seed=1)).heldout_phrasing
    kept = allowed_phrasings(EXTRA_PHRASINGS, held)
    assert "Count down one from {n}." not in kept["previous_number"]  # "down": only held-out "count down"
    assert borrowing(kept, held) == {}
    assert 0 < sum(map(len, kept.values())) < sum(map(len, EXTRA_PHRASINGS.values()))
    with pytest.raises(ValueError, match="no such intent"):
        borrowing({"weather": ("Is it raining?",)}, held)
    with pytest.raises(ValueError, match="borrows from a held-out phrasing"):
        allowed_phrasings({"day_after": ("If today is {x}, what day is tomorrow?",)}, {"day_after": 3})


def test_heldout_indices_read_corpus_json():
    meta = {
        "heldout_phrasings": {"plus": "plus.1 'How much is {a} plus {b}?'", "name": "name.2 'Who are you?'"}
    }
    assert heldout_indices(meta) == {"plus": 1, "name": 2}


def _train() -> list[dict]:
    records = []
    for i, (name, operands) in enumerate(
        [("plus", (3, 4)), ("capital", ("Peru",)), ("thanks", ()), ("plus", (9, 1))]
    ):
        qa = render(INTENTS_BY_NAME[name], 0, operands)
        records.append(
            {
                "id": f"train-{i}",
                "text": qa.question,
                "reply_text": qa.reply,
                "reply_audio": f"replies/{i}.wav",
                "answers": list(qa.answers),
                "category": INTENTS_BY_NAME[name].category,
                "voice": f"voice-{i}",
                "intent": name,
                "operands": list(operands),
                "history": [],
            }
        )
    records.append({**records[0], "id": "train-multi", "history": [{"role": "user", "text": "Hi"}]})
    return records


def test_items_ask_a_training_combo_in_a_new_phrasing_with_its_reply_and_voice():
    train = _train()
    sources = {r["id"]: r for r in train}
    items = build_items(train, 200, seed=3, config=SynthConfig(out="corpus"))
    assert items == build_items(train, 200, seed=3, config=SynthConfig(out="corpus"))  # seeded
    assert "train-multi" not in {i["source"] for i in items}  # multi-turn items are not re-asked
    for item in items:
        source = sources[item["source"]]
        intent, k = item["phrasing"].split(".x")
        assert intent == source["intent"] and item["operands"] == source["operands"]
        fields = intent_fields(INTENTS_BY_NAME[intent], tuple(source["operands"]))
        expected = EXTRA_PHRASINGS[intent][int(k)].format(**fields)
        assert item["text"] == expected[0].upper() + expected[1:]
        for key in ("reply_text", "reply_audio", "answers", "category", "voice"):
            assert item[key] == source[key]
        assert item["audio"].startswith("audio/paraphrases/") and item["heldout"] == []
    assert "Please add three and four." in {i["text"] for i in items}
    assert len({i["phrasing"] for i in items}) > 16  # phrasings are drawn, not the first one always
    with pytest.raises(ValueError, match="single-turn"):
        build_items([train[-1]], 3, seed=0, config=SynthConfig(out="corpus"))


@needs_tts
def test_cli_renders_the_items_with_training_voices(tmp_path):
    from training.data.manifest import read_manifest
    from training.data.synth import main as synth

    corpus = tmp_path / "corpus"
    synth(["--out", str(corpus), "--limit", "2", "--multiturn", "2", "--workers", "2"])
    summary = main(["--corpus", str(corpus), "--items", "6", "--workers", "2"])
    info = json.loads((corpus / "corpus.json").read_text())
    items = read_manifest(corpus / "paraphrases.jsonl")
    train = {i.id: i for i in read_manifest(corpus / "train.jsonl")}
    assert len(items) == 6 and summary["items"] == 6 and summary["rendered_files"] == 6
    lines = [json.loads(line) for line in (corpus / "paraphrases.jsonl").read_text().splitlines()]
    for item, line in zip(items, lines, strict=True):
        assert item.voice in info["user_voices"]["train"]
        source = train[line["source"]]
        assert item.reply_text == source.reply_text and item.reply_audio == source.reply_audio
        wav = sf.info(str(item.audio))
        assert (wav.samplerate, wav.channels) == (16000, 1) and wav.duration > 0.3
    assert main(["--corpus", str(corpus), "--items", "6"])["rendered_files"] == 0


def test_cli_help_and_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0 and "--items" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["--corpus", str(tmp_path)])
    assert done.value.code == 2 and "build the corpus first" in capsys.readouterr().err
