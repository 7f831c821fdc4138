"""The question-swap test (`training.eval.follow_text`): partners, scores by hand, and the CLI on a
tiny checkpoint."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from core.types import Done, Waveform
from tests.training.test_eval import needs_flite, write_manifest
from tests.training.test_eval_cli import tiny_checkpoint  # noqa: F401 (a fixture)
from training.eval.follow_text import SwapResult, main, run_item, summarize, swap_items

RECORDS = [
    {"id": "a", "text": "What is one plus one?", "reply_text": "One plus one is two.", "answers": ["2", "two"],
     "category": "arithmetic", "intent": "plus"},
    {"id": "b", "text": "What is two plus zero?", "reply_text": "Two plus zero is two.", "answers": ["2", "two"],
     "category": "arithmetic", "intent": "times"},
    {"id": "c", "text": "Hello!", "reply_text": "Hello! How can I help you today?", "answers": ["hello"],
     "category": "smalltalk", "intent": "hello"},
]  # fmt: skip


def test_partners_are_of_another_intent_with_other_answers():
    swapped = swap_items(RECORDS, Path("/m"))
    # a's next record b is another intent but shares the answer "two": c is its partner
    assert [(s.id, s.given_id) for s in swapped] == [("a", "c"), ("b", "c"), ("c", "a")]
    assert swapped[0].given_text == "Hello! How can I help you today?" and swapped[0].given_answers == (
        "hello",
    )
    assert swapped[2].given_question == "What is one plus one?" and swapped[2].answers == ("hello",)
    control = swap_items(RECORDS, Path("/m"), control=True)
    assert [(s.given_text, s.given_answers) for s in control] == [
        (r["reply_text"], tuple(r["answers"])) for r in RECORDS
    ]
    with pytest.raises(ValueError, match="no partner"):
        swap_items(RECORDS[:2], Path("/m"))
    with pytest.raises(ValueError, match="reply_text"):
        swap_items([{"id": "x", "answers": ["1"]}], Path("/m"))


class FakeEngine:
    """Writes the given reply text; its 'audio' is the text to transcribe, carried in a Waveform."""

    def __init__(self):
        self.requests = []

    def chat(self, request):
        self.requests.append(request)
        return Done(request.reply_text, "", ""), Waveform(np.zeros(160, np.float32), 16000)


@pytest.mark.parametrize(
    "heard, follows_text, follows_question, errors",
    [
        ("hello how can i help you today", True, False, 0),  # says the text it is fed
        ("one plus one is two", False, True, 7),  # says the question's own reply
        ("", False, False, 7),
    ],
)
def test_run_item_scores_by_hand(heard, follows_text, follows_question, errors):
    engine = FakeEngine()
    item = swap_items(RECORDS, Path("/m"))[0]  # a's question, c's reply
    result = run_item(engine, item, "T2M", lambda wav: heard)
    assert engine.requests[0].text == "What is one plus one?" and engine.requests[0].audio is None
    assert engine.requests[0].reply_text == "Hello! How can I help you today?"
    assert (result.follows_text, result.follows_question) == (follows_text, follows_question)
    assert (result.word_errors, result.reference_words) == (errors, 7)
    with pytest.raises(ValueError, match="no 'audio'"):
        run_item(engine, item, "S2M", lambda wav: heard)


def test_an_operand_the_given_reply_echoes_is_no_answer():
    b = RECORDS[1]  # "Two plus zero is two.": its answer is also an operand of its question
    item = dataclasses.replace(
        swap_items(RECORDS, Path("/m"))[2],
        given_text=b["reply_text"],
        given_answers=("2", "two"),
        given_question=b["text"],
    )
    assert not run_item(FakeEngine(), item, "T2M", lambda wav: "two plus zero").follows_text
    assert run_item(FakeEngine(), item, "T2M", lambda wav: "two plus zero is two").follows_text


def _row(given_category, follows_text, follows_question, errors, words=5):
    return SwapResult("i", "g", "x", given_category, "t", "", follows_text, follows_question, errors, words)


def test_summary_by_hand():
    swapped = [
        _row("number", True, False, 0),
        _row("number", False, True, 4),
        _row("smalltalk", False, False, 5),
    ]
    control = [
        _row("number", True, True, 1),
        _row("smalltalk", True, True, 0),
        _row("smalltalk", False, False, 2),
    ]
    report = summarize(swapped, control)
    assert report["n"] == 3 and report["follows_text"] == pytest.approx(1 / 3)
    assert report["follows_question"] == pytest.approx(1 / 3) and report["wer_text"] == pytest.approx(9 / 15)
    assert report["control_heard"] == pytest.approx(2 / 3)
    number, talk = report["by_category"]["number"], report["by_category"]["smalltalk"]
    assert (number["n"], number["follows_text"], number["wer_text"], number["control_heard"]) == (
        2,
        0.5,
        0.4,
        1.0,
    )
    assert (talk["follows_text"], talk["follows_question"], talk["control_heard"]) == (0.0, 0.0, 0.5)


@needs_flite
def test_cli_on_a_tiny_checkpoint(tiny_checkpoint, tmp_path, capsys):  # noqa: F811
    rows = [{**r, "audio": None} for r in RECORDS]
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "items.jsonl"
    main(
        [
            "--checkpoint",
            str(tiny_checkpoint),
            "--manifest",
            str(manifest),
            "--items",
            "0",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    items = [json.loads(x) for x in out.read_text().splitlines()]
    swapped = [r for r in items if r["pass"] == "swap"]
    control = [r for r in items if r["pass"] == "control"]
    assert report["mode"] == "T2M" and report["n"] == 3 and len(swapped) == len(control) == 3
    # the model wrote exactly the text it was given: the partner's reply, or in the control its own
    assert [r["given_text"] for r in swapped] == [RECORDS[i]["reply_text"] for i in (2, 2, 0)]
    assert [r["given_text"] for r in control] == [r["reply_text"] for r in RECORDS]
    assert report["follows_text"] == pytest.approx(sum(r["follows_text"] for r in swapped) / 3)
    words = sum(r["reference_words"] for r in swapped)
    assert words == 7 + 7 + 5 and report["wer_text"] == pytest.approx(
        sum(r["word_errors"] for r in swapped) / words
    )
    with pytest.raises(SystemExit):
        main(["--manifest", str(write_manifest(tmp_path / "bad.jsonl", [{"id": "x", "answers": []}]))])
    assert "reply_text" in capsys.readouterr().err
