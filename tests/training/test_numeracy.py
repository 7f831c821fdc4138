"""Tests of the numeracy text for the LLM (training/data/numeracy.py): no held-out fact in any
wording, training phrasings only, operands beyond the corpus's, the manifest it writes."""

import json

import pytest

from training.data.manifest import read_manifest
from training.data.numeracy import NumeracyConfig, build_items, fact_of, heldout_facts, main, share
from training.data.qa_domain import INTENTS_BY_NAME
from training.data.synth_plan import SynthConfig, plan_splits
from training.eval.scoring import number_to_words

HELDOUT = {
    "plus": {"validation": [[5, 5]], "test": [[8, 10], [10, 8], [11, 11]]},
    "minus": {"validation": [], "test": [[12, 6]]},
    "times": {"validation": [], "test": [[7, 11], [11, 7]]},
    "next_number": {"validation": [], "test": [[45]]},
    "previous_number": {"validation": [], "test": [[45]]},
}


def test_facts_are_compared_as_relations_not_wordings():
    assert fact_of("plus", (8, 10)) == fact_of("plus", (10, 8)) == ("add", (8, 10), 18)
    assert fact_of("minus", (18, 8)) == fact_of("plus", (8, 10))  # 18 - 8 = 10
    assert fact_of("minus", (18, 10)) == fact_of("plus", (8, 10))
    assert fact_of("next_number", (45,)) == fact_of("plus", (45, 1)) == fact_of("minus", (46, 1))
    assert fact_of("previous_number", (45,)) == fact_of("plus", (1, 44)) == fact_of("minus", (45, 44))
    assert fact_of("times", (7, 11)) == ("mul", (7, 11), 77) != fact_of("plus", (7, 11))
    with pytest.raises(ValueError, match="capital"):
        fact_of("capital", ("France",))


def _statements(items):
    return {fact_of(i["intent"], tuple(i["operands"])) for i in items}


def test_no_heldout_fact_in_any_wording():
    items, summary = build_items(NumeracyConfig(items=20000, seed=3), HELDOUT, {"plus": 1})
    facts = _statements(items)
    banned = heldout_facts(HELDOUT)
    assert banned and not facts & banned
    # the equivalent statements a naive filter on (intent, operands) would let through are absent
    pairs = {(i["intent"], tuple(i["operands"])) for i in items}
    for leak in [
        ("minus", (18, 8)),
        ("minus", (22, 11)),
        ("plus", (45, 1)),
        ("minus", (46, 1)),
        ("plus", (44, 1)),
    ]:
        assert leak not in pairs
    # ... while their neighbours are there (the filter is not just dropping everything near them)
    assert ("minus", (18, 7)) in pairs and ("plus", (45, 2)) in pairs
    assert summary["dropped_heldout_facts"]["minus"] >= 4
    assert sorted(summary["heldout_facts"]) == sorted([f[0], list(f[1]), f[2]] for f in banned)


def test_items_are_beyond_the_corpus_operands_in_training_phrasings():
    items, _ = build_items(NumeracyConfig(items=3000), HELDOUT, {"plus": 1, "minus": 3, "times": 0})
    assert len(items) == 3000 and len({i["id"] for i in items}) == 3000
    for item in items:
        a, b = item["operands"]
        assert max(a, b) > 12
        intent = INTENTS_BY_NAME[item["intent"]]
        c = {"plus": a + b, "minus": a - b, "times": a * b}[item["intent"]]
        assert c >= 0 and item["answers"][0] == str(c)
        assert item["reply_text"].lower().endswith(item["answers"][1] + ".")
        index = int(item["phrasing"].split(".")[1])
        assert index != {"plus": 1, "minus": 3, "times": 0}[item["intent"]]
        question = intent.phrasings[index].format(a=number_to_words(a), b=number_to_words(b))
        assert item["text"] == question[:1].upper() + question[1:]
    assert {i["intent"] for i in items} == {"plus", "minus", "times"}


def test_share_fills_small_pools_before_repeating():
    assert share(10, {"a": 100, "b": 100, "c": 2}) == {"a": 4, "b": 4, "c": 2}
    assert share(9, {"a": 3, "b": 3, "c": 3}) == {"a": 3, "b": 3, "c": 3}
    assert share(7, {"a": 2, "b": 1, "c": 0}) == {"a": 4, "b": 3, "c": 0}  # repeats once all are used
    with pytest.raises(ValueError, match="no operand pair"):
        share(3, {"a": 0})


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="--items"):
        build_items(NumeracyConfig(items=0), HELDOUT, {})
    with pytest.raises(ValueError, match="must exceed 12"):
        build_items(NumeracyConfig(max_addend=12), HELDOUT, {})


def test_cli_writes_a_manifest_of_the_corpus_split(tmp_path, capsys):
    cfg = SynthConfig(out=str(tmp_path))
    plan = plan_splits(cfg)
    heldout = {
        name: {s: [list(c) for c in plan.combos[name][s]] for s in ("validation", "test")}
        for name in ("plus", "minus", "times", "next_number", "previous_number")
    }
    phrasings = {name: f"{name}.{i} 'template'" for name, i in plan.heldout_phrasing.items()}
    (tmp_path / "corpus.json").write_text(
        json.dumps({"heldout_combos": heldout, "heldout_phrasings": phrasings})
    )
    main(["--corpus", str(tmp_path), "--items", "900", "--seed", "1"])
    items = read_manifest(tmp_path / "numeracy.jsonl")
    assert len(items) == 900 and all(i.audio is None and not i.reply_tokens for i in items)
    assert {i.category for i in items} == {"numeracy"}
    raw = [json.loads(x) for x in (tmp_path / "numeracy.jsonl").read_text().splitlines()]
    assert not _statements(raw) & heldout_facts(heldout)
    for item in raw:
        assert int(item["phrasing"].split(".")[1]) != plan.heldout_phrasing[item["intent"]]
    summary = json.loads((tmp_path / "numeracy.json").read_text())
    assert sum(summary["counts"].values()) == 900


def test_cli_help_and_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0 and "--max-addend" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["--corpus", str(tmp_path)])
    assert done.value.code == 2 and "build the corpus first" in capsys.readouterr().err
