"""benchmarks/ensemble_cost.py on the demo checkpoint and the committed spoken fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.ensemble_cost import main, measure, parse_settings

DEMO = Path(__file__).resolve().parents[2] / "checkpoints" / "demo"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_settings_parse():
    assert parse_settings("1:0, 3:0.5,5") == [(1, 0.0), (3, 0.5), (5, 0.0)]


def test_each_setting_answers_every_question_and_is_reported_against_the_first(tmp_path, capsys):
    audios = [FIXTURES / q["audio"] for q in json.loads((FIXTURES / "questions.json").read_text())]
    rows = measure(str(DEMO), audios, "S2M", [(1, 0.0), (3, 0.5)])
    assert [(r["audio_views"], r["text_guide"]) for r in rows] == [(1, 0.0), (3, 0.5)]
    assert all(r["real_time_factor"] > 0 and r["time_to_first_audio_ms"] > 0 for r in rows)
    assert rows[0]["rtf_vs_first"] == rows[0]["ttfa_vs_first"] == 1.0
    assert rows[1]["rtf_vs_first"] == pytest.approx(
        rows[1]["real_time_factor"] / rows[0]["real_time_factor"], rel=1e-2
    )

    manifest = tmp_path / "m.jsonl"  # the command line: every n-th line of a manifest, audio relative to it
    manifest.write_text("".join(json.dumps({"audio": str(a)}) + "\n" for a in audios))
    main(["--checkpoint", str(DEMO), "--manifest", str(manifest), "--questions", "1", "--settings", "1:0", "--json"])
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(out) == 1 and out[0]["audio_views"] == 1
