"""The codec judge's ceilings per reply and per manifest item (benchmarks/codec_judge.py)."""

from __future__ import annotations

import json
import shutil

import pytest

from benchmarks.codec_judge import measure
from training.eval.scoring import contains_answer, word_errors

pytestmark = pytest.mark.skipif(
    shutil.which("flite") is None, reason="flite is not installed (apt-get install flite); CI installs it"
)


def test_each_reply_counts_as_often_as_the_manifest_asks_for_it(tmp_path, tiny_assets):
    rows = [json.loads(x) for x in tiny_assets.manifest.read_text().splitlines()]
    for row in rows:
        row["audio"], row["reply_audio"] = (str(tiny_assets.root / row[k]) for k in ("audio", "reply_audio"))
    manifest = tmp_path / "asked.jsonl"  # the first reply asked for three times
    asked = [{**rows[0], "id": f"qa-0-{i}"} for i in range(3)] + rows[1:]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in asked))

    out = measure(manifest, tiny_assets.init / "codec", replies=100)
    replies = out["per_reply"]
    assert (out["replies"], out["items"]) == (4, 6)
    assert [e["text"] for e in replies] == [r["reply_text"] for r in rows]
    assert [e["items"] for e in replies] == [3, 1, 1, 1]
    for entry, row in zip(replies, rows, strict=True):
        for name in ("original", "codec"):
            assert entry[f"{name}_heard"] == contains_answer(entry[name], row["answers"], row["text"])
            assert (entry[f"{name}_errors"], entry["words"]) == word_errors(row["reply_text"], entry[name])
    for name in ("original", "codec"):
        heard = [e[f"{name}_heard"] for e in replies]
        errors = [e[f"{name}_errors"] for e in replies]
        words = [e["words"] for e in replies]
        assert out[f"{name}_answer_heard"] == pytest.approx(sum(heard) / 4)
        assert out[f"{name}_answer_heard_items"] == pytest.approx((2 * heard[0] + sum(heard)) / 6)
        assert out[f"{name}_wer"] == pytest.approx(sum(errors) / sum(words))
        assert out[f"{name}_wer_items"] == pytest.approx(
            (2 * errors[0] + sum(errors)) / (2 * words[0] + sum(words))
        )
    assert out["original_wer"] < 0.5, replies  # the judge reads flite's own voice
