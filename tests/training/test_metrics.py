"""MetricsLogger: JSONL lines flushed per step, truncation on resume, PNG plot."""

import math

import numpy as np
import pytest
import torch

from training.metrics import METRICS_FILENAME, MetricsLogger, read_metrics


def test_log_writes_flushed_json_lines(tmp_path):
    """Each log() is readable from disk immediately (flushed), tensors/numpy scalars become numbers."""
    metrics = MetricsLogger(tmp_path / "run")
    metrics.log(0, loss=torch.tensor(2.5), lr=np.float32(0.5), note="warmup")
    # Read while the logger is still open: the line must already be on disk.
    assert read_metrics(tmp_path / "run" / METRICS_FILENAME) == [
        {"step": 0, "loss": 2.5, "lr": 0.5, "note": "warmup"}
    ]
    metrics.log(1, loss=2.0, tokens=128)
    records = metrics.records()
    assert records[1] == {"step": 1, "loss": 2.0, "tokens": 128}
    metrics.close()


def test_log_rejects_non_scalars(tmp_path):
    """Lists and multi-element tensors raise TypeError; nothing is written."""
    with MetricsLogger(tmp_path) as metrics:
        with pytest.raises(TypeError):
            metrics.log(0, loss=[1.0, 2.0])
        with pytest.raises(TypeError, match="shape"):
            metrics.log(0, loss=torch.ones(2))
        assert metrics.records() == []


def test_truncate_on_resume_drops_steps_at_or_after_resume(tmp_path):
    """A run logged steps 0..9 and was killed (its last line cut mid-write). Resuming from the
    checkpoint at step 6 drops steps 6..9 and the broken line; the resumed run logs 6.. again and the
    curve has each step once.
    """
    with MetricsLogger(tmp_path) as metrics:
        for step in range(10):
            metrics.log(step, loss=10.0 - step)
    with open(tmp_path / METRICS_FILENAME, "a", encoding="utf-8") as f:
        f.write('{"step": 10, "lo')  # killed mid-line

    resumed = MetricsLogger(tmp_path)
    assert resumed.truncate_after(6) == 4
    for step in range(6, 12):
        resumed.log(step, loss=1.0 / (step + 1))
    resumed.close()

    steps = [r["step"] for r in read_metrics(tmp_path / METRICS_FILENAME)]
    assert steps == list(range(12))
    assert read_metrics(tmp_path / METRICS_FILENAME)[6]["loss"] == pytest.approx(1.0 / 7)


def test_read_metrics_missing_file_and_nan(tmp_path):
    assert read_metrics(tmp_path / "nothing.jsonl") == []
    with MetricsLogger(tmp_path) as metrics:
        metrics.log(0, loss=float("nan"))
    assert math.isnan(read_metrics(tmp_path / METRICS_FILENAME)[0]["loss"])


def test_plot_writes_a_png(tmp_path):
    """plot() writes a non-empty PNG (magic bytes \\x89PNG) in out_dir; missing keys and NaN are tolerated."""
    with MetricsLogger(tmp_path) as metrics:
        for step in range(5):
            metrics.log(step, loss=1.0 / (step + 1), lr=1e-4 * step)
        metrics.log(5, loss=float("nan"))
        out = metrics.plot("loss.png", keys=("loss", "lr", "never_logged"))
        all_keys = metrics.plot(tmp_path / "sub" / "all.png", keys=None)
    assert out == tmp_path / "loss.png"
    for path in (out, all_keys):
        data = path.read_bytes()
        assert len(data) > 1000
        assert data[:4] == b"\x89PNG"
