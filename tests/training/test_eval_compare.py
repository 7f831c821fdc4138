"""training/eval/compare.py: paired comparison of two runs, checked by hand."""

import json

import pytest

from training.eval.compare import compare, main, mcnemar_p
from training.eval.harness import ItemResult, write_results


def _results(text, speech, mode="T2M", prefix="q"):
    return [
        ItemResult(f"{prefix}{i}", mode, "c", "reply", t, speech_correct=s)
        for i, (t, s) in enumerate(zip(text, speech, strict=True))
    ]


def test_mcnemar_by_hand():
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(3, 1) == pytest.approx(2 * (1 + 4) / 16)  # 0.625
    assert mcnemar_p(5, 0) == pytest.approx(2 / 32)
    assert mcnemar_p(0, 10) == mcnemar_p(10, 0) == pytest.approx(2 / 1024)


def test_paired_counts_and_interval_by_hand():
    #      text: A right on 7 of 10, B on 5; A alone on 3 items, B alone on 1
    a = _results([1, 1, 1, 1, 1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    b = _results([1, 1, 1, 1, 0, 0, 0, 1, 0, 0], [1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    b.append(ItemResult("extra", "T2M", "c", "r", True))  # not in A: left out
    b.append(ItemResult("q0", "S2T", "c", "r", True))  # a mode A does not have: left out
    report = compare(a, b)
    assert list(report) == ["T2M"]
    entry = report["T2M"]
    assert (entry["n"], entry["only_in_a"], entry["only_in_b"]) == (10, 0, 1)
    text = entry["text"]
    assert (text["a"], text["b"], text["only_a"], text["only_b"]) == (0.7, 0.5, 3, 1)
    assert text["difference"] == pytest.approx(-0.2)
    half = 1.96 * (4 - 4 / 10) ** 0.5 / 10
    assert text["ci95"] == pytest.approx([-0.2 - half, -0.2 + half])
    assert text["p_value"] == pytest.approx(0.625)
    speech = entry["speech"]
    assert (speech["a"], speech["b"], speech["only_a"], speech["only_b"]) == (0.1, 0.3, 0, 2)
    assert speech["p_value"] == pytest.approx(0.5)


def test_text_modes_have_no_speech_measure():
    a = _results([1, 0], [None, None], mode="T2T")
    assert "speech" not in compare(a, a)["T2T"]
    assert compare(a, a)["T2T"]["text"]["p_value"] == 1.0


def test_cli(tmp_path, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_results(_results([1, 1, 0], [1, 0, 0]), a)
    write_results(_results([1, 0, 0], [1, 0, 1]), b)
    report = main([str(a), str(b), "--json"])
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(report))
    assert report["T2M"]["text"]["only_a"] == 1 and report["T2M"]["speech"]["only_b"] == 1
    main([str(a), str(b)])
    table = capsys.readouterr().out
    assert "| T2M | text | 3 | 66.7 | 33.3 | -33.3" in table
    with pytest.raises(SystemExit):
        main([str(a), str(tmp_path / "missing.jsonl")])
