"""``python app.py``: --help, a clear message when the checkpoint is missing, start-up time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import app.cli
from tests.app.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
STARTUP_LIMIT_S = 45  # the target is 20 s on an idle 2-core CPU; other jobs share this machine in CI


def test_help_lists_the_options():
    out = subprocess.run(
        [sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    for flag in ("--checkpoint", "--host", "--port", "--db", "--data-dir", "--share", "--concurrency"):
        assert flag in out.stdout


def test_missing_default_checkpoint_says_how_to_pass_one(tmp_path, monkeypatch):
    monkeypatch.setattr(app.cli, "DEFAULT_CHECKPOINT", tmp_path / "demo")
    with pytest.raises(SystemExit) as exit_info:
        app.cli.check_checkpoint(None)
    assert "is missing" in str(exit_info.value) and "--checkpoint" in str(exit_info.value)


def test_a_directory_that_is_not_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="not a DrVoice checkpoint directory"):
        app.cli.check_checkpoint(str(tmp_path))
    out = subprocess.run(
        [sys.executable, "app.py", "--checkpoint", str(tmp_path / "nowhere")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode != 0 and "--checkpoint" in out.stderr


def test_app_starts_and_serves_the_page(tiny, tmp_path):
    port = free_port()
    db = tmp_path / "app.sqlite3"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "DRVOICE_ADMIN_TOKEN": ""}
    command = [sys.executable, "app.py", "--checkpoint", str(tiny[0]), "--port", str(port), "--threads", "1",
               "--db", f"sqlite:///{db}", "--data-dir", str(tmp_path / "data")]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        page = None
        while time.perf_counter() - started < STARTUP_LIMIT_S and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    page = response.read().decode()
                break
            except OSError:
                time.sleep(0.25)
        elapsed = time.perf_counter() - started
        assert page is not None, f"no page after {elapsed:.1f} s (exit code {process.poll()})"
        assert "gradio" in page.lower() and db.is_file()
        print(f"app.py served its page {elapsed:.1f} s after launch")
    finally:
        process.terminate()
        try:
            output = process.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            process.kill()
            output = process.communicate()[0]
    assert "admin actions disabled" in output and "Traceback" not in output
