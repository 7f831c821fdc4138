"""Tests of the counterfactual replies (training/data/counterfactual.py): wrong answers of the same
kind, no held-out operands, speech-only targets, the manifest and audio the command writes."""

import json
import shutil

import pytest

from training.data.counterfactual import CATEGORIES, CounterfactualConfig, build_items, main
from training.data.manifest import read_manifest
from training.data.qa_domain import CAPITALS, INTENTS_BY_NAME, OPPOSITES, WEEKDAYS, intent_fields, render

HELDOUT = {
    "plus": {"validation": [[5, 5]], "test": [[8, 10], [10, 8]]},
    "next_number": {"validation": [], "test": [[45]]},
}
SOURCES = [
    ("plus", (3, 4)),
    ("minus", (9, 2)),
    ("times", (6, 7)),
    ("next_number", (12,)),
    ("previous_number", (30,)),
    ("day_after", ("Monday",)),
    ("month_before", ("May",)),
    ("capital", ("France",)),
    ("opposite", ("hot",)),
    ("hello", ()),
]


def _train() -> list[dict]:
    records = []
    for i, (name, operands) in enumerate(SOURCES):
        intent = INTENTS_BY_NAME[name]
        qa = render(intent, 0, operands)
        records.append(
            {
                "id": f"train-{name}-{i}",
                "text": qa.question,
                "audio": f"audio/train/{i}.wav",
                "reply_text": qa.reply,
                "category": intent.category,
                "intent": name,
                "operands": list(operands),
                "voice": "kal",
            }
        )
    return records


def _right_answer(item: dict) -> str:
    return intent_fields(INTENTS_BY_NAME[item["intent"]], tuple(item["reply_operands"]))["answer"]


def test_every_reply_is_wrong_for_its_operands_and_keeps_its_intent():
    items, summary = build_items(CounterfactualConfig(items=2000, seed=1), _train(), HELDOUT)
    assert len(items) == 2000 and sum(summary["counts"].values()) == 2000
    assert {i["category"] for i in items} == set(CATEGORIES)  # small talk has no answer to change
    for item in items:
        intent = INTENTS_BY_NAME[item["intent"]]
        fields = intent_fields(intent, tuple(item["reply_operands"]))
        prefix, _, _ = intent.reply.partition("{answer}")
        stated = item["reply_text"][len(prefix.format(**fields)) :].rstrip(".").lower()
        assert item["reply_text"].lower().startswith(prefix.format(**fields).lower())
        assert stated and stated != _right_answer(item).lower()
        if intent.category == "weekday":
            assert stated.capitalize() in WEEKDAYS
        if intent.category == "capital":
            assert stated in {c.lower() for c in CAPITALS.values()}
        if intent.category == "opposite":
            assert stated in OPPOSITES
        assert item["text_target"] is False and item["reply_text"][0].isupper()
        assert item["reply_operands"] not in HELDOUT.get(item["intent"], {}).get("test", [])
    # the question stays the training item's own: text, recording and id of the source
    sources = {r["id"]: r for r in _train()}
    assert all(sources[i["source"]]["audio"] == i["audio"] for i in items)
    assert len({i["id"] for i in items}) == 2000


def test_operand_probability_decides_whether_the_reply_keeps_the_question_operands():
    train = {r["id"]: r for r in _train()}
    kept, _ = build_items(CounterfactualConfig(items=300, operand_probability=0.0), _train(), HELDOUT)
    assert all(i["reply_operands"] == train[i["source"]]["operands"] for i in kept)
    drawn, _ = build_items(CounterfactualConfig(items=300, operand_probability=1.0), _train(), HELDOUT)
    changed = sum(i["reply_operands"] != train[i["source"]]["operands"] for i in drawn)
    assert changed > 200
    again, _ = build_items(CounterfactualConfig(items=300, operand_probability=1.0), _train(), HELDOUT)
    assert again == drawn  # seeded


def test_heldout_operands_are_never_put_in_a_reply():
    """Every plus pair but the training item's own is held out: plus replies keep (3, 4)."""
    others = [[a, b] for a in range(21) for b in range(21) if (a, b) != (3, 4)]
    heldout = {"plus": {"validation": others[::2], "test": others[1::2]}}
    items, _ = build_items(CounterfactualConfig(items=400, operand_probability=1.0), _train(), heldout)
    plus = [i for i in items if i["intent"] == "plus"]
    assert plus and all(i["reply_operands"] == [3, 4] for i in plus)
    assert any(i["reply_operands"] != [9, 2] for i in items if i["intent"] == "minus")


def test_categories_limit_the_questions_drawn():
    cfg = CounterfactualConfig(items=300, categories=("arithmetic", "number"))
    items, summary = build_items(cfg, _train(), HELDOUT)
    assert {i["category"] for i in items} == {"arithmetic", "number"}
    assert set(summary["counts"]) == {"arithmetic", "number"}
    with pytest.raises(ValueError, match="--categories"):
        CounterfactualConfig(categories=("arithmetic", "smalltalk"))
    with pytest.raises(ValueError, match="--categories"):
        CounterfactualConfig(categories=())


def test_swapped_items_pair_a_question_with_another_intents_true_reply():
    train = {r["id"]: r for r in _train()}
    items, summary = build_items(CounterfactualConfig(items=400, swap_probability=0.5), _train(), HELDOUT)
    swapped = [i for i in items if "reply_source" in i]
    assert summary["counts"]["swapped"] == len(swapped) and 150 < len(swapped) < 250
    for item in swapped:
        question, reply = train[item["source"]], train[item["reply_source"]]
        assert item["text"] == question["text"] and item["audio"] == question["audio"]
        assert item["reply_text"] == reply["reply_text"] and item["intent"] == question["intent"]
        assert reply["intent"] != question["intent"] and item["text_target"] is False
    assert any(train[i["reply_source"]]["intent"] == "hello" for i in swapped)  # small talk replies too
    every, _ = build_items(CounterfactualConfig(items=50, swap_probability=1.0), _train(), HELDOUT)
    assert all("reply_source" in i for i in every)
    with pytest.raises(ValueError, match="--swap-probability"):
        CounterfactualConfig(swap_probability=-0.1)
    one_intent = [r for r in _train() if r["intent"] == "plus"]
    with pytest.raises(ValueError, match="more than one intent"):
        build_items(CounterfactualConfig(items=5, swap_probability=0.5), one_intent, HELDOUT)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="--items"):
        CounterfactualConfig(items=0)
    with pytest.raises(ValueError, match="--operand-probability"):
        CounterfactualConfig(operand_probability=1.5)
    with pytest.raises(ValueError, match="answer-bearing"):
        build_items(CounterfactualConfig(items=3), [r for r in _train() if r["intent"] == "hello"], {})


@pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed (.ci/run installs it)")
def test_cli_writes_spoken_replies_whose_text_is_an_input_only(tmp_path):
    (tmp_path / "corpus.json").write_text(json.dumps({"heldout_combos": HELDOUT}))
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _train()))
    main(["--corpus", str(tmp_path), "--items", "4", "--seed", "2", "--workers", "1"])
    items = read_manifest(tmp_path / "counterfactual.jsonl", check_files=False)
    assert len(items) == 4 and not any(i.text_target for i in items)
    for item in items:
        assert item.reply_audio.is_file() and item.reply_audio.stat().st_size > 8000
    summary = json.loads((tmp_path / "counterfactual.json").read_text())
    assert summary["items"] == 4 and summary["spoken_replies"] == len({i.reply_text for i in items})


def test_cli_help_and_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0 and "--operand-probability" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["--corpus", str(tmp_path)])
    assert done.value.code == 2 and "build the corpus first" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["--corpus", str(tmp_path), "--categories", "smalltalk"])
    assert done.value.code == 2 and "--categories" in capsys.readouterr().err
