"""Tests of the assistant-voice general sentences (training/data/assistant_speech.py), rendered with
flite (skipped with the reason shown where it is missing; CI installs it)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import soundfile as sf

from training.data.assistant_speech import SPLIT, main, plan_assistant_speech
from training.data.general_speech import english_vocabulary, sentences
from training.data.tts import ASSISTANT_VOICE

needs_flite = pytest.mark.skipif(
    shutil.which("flite") is None, reason="flite is not installed (apt-get install flite); CI installs it"
)


def test_plan_is_seeded_and_differs_from_the_user_voice_sentences():
    words = english_vocabulary(200)
    plan = plan_assistant_speech(20, words, seed=0)
    assert plan == plan_assistant_speech(20, words, seed=0) != plan_assistant_speech(20, words, seed=1)
    assert [r["text"] for r in plan] != sentences(words, 20, seed=0)  # not the ear's general sentences
    assert {r["voice"] for r in plan} == {ASSISTANT_VOICE.name}
    assert len({r["audio"] for r in plan}) == 20 and all(
        r["audio"].startswith(f"audio/{SPLIT}/") for r in plan
    )


@needs_flite
def test_renders_the_sentences_in_the_assistant_voice_once(tmp_path):
    records = main(["--corpus", str(tmp_path), "--sentences", "3", "--vocabulary", "100", "--workers", "1"])
    lines = [json.loads(x) for x in (tmp_path / f"{SPLIT}.jsonl").read_text().splitlines()]
    assert lines == records and len(lines) == 3
    for record in lines:
        info = sf.info(str(tmp_path / record["audio"]))
        assert info.samplerate == 16000 and info.channels == 1
        assert 0.15 * len(record["text"].split()) < info.duration < 10  # spoken, not empty
    first = tmp_path / lines[0]["audio"]
    stamp = first.stat().st_mtime_ns
    main(["--corpus", str(tmp_path), "--sentences", "3", "--vocabulary", "100", "--workers", "1"])
    assert first.stat().st_mtime_ns == stamp  # existing files are kept


def test_cli_help_and_bad_arguments(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "training.data.assistant_speech", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "--sentences" in result.stdout
    with pytest.raises(SystemExit):
        main(["--corpus", str(tmp_path), "--sentences", "0"])
