"""One small metrics logger for every recipe: JSON lines on disk plus a PNG plot (STYLE.md §5).

Each call to :meth:`MetricsLogger.log` appends one line ``{"step": 12, "loss": 3.1, "lr": 9.8e-05}`` to
``<out_dir>/metrics.jsonl`` and flushes it, so a killed run keeps every step it logged. A resumed run
calls :meth:`MetricsLogger.truncate_after` with its resume step first, so steps it is about to
re-log are not duplicated in the curve. In multi-process training only rank 0 should own a logger.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

METRICS_FILENAME = "metrics.jsonl"


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a ``metrics.jsonl`` file.

    Lines that do not parse (typically the last one, cut by a killed process) are skipped with a
    warning. A missing file reads as no records.

    Args:
        path: the JSONL file.

    Returns:
        One dict per logged line, in file order.
    """
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with path.open(encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s:%d: skipping a malformed metrics line", path, line_number)
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def _to_scalar(name: str, value: Any) -> float | int | str | bool:
    """Turn a logged value (Python number, 0-d tensor / numpy scalar, string) into a JSON scalar."""
    if hasattr(value, "item") and callable(value.item):  # torch / numpy scalars
        try:
            value = value.item()
        except (RuntimeError, ValueError) as err:  # more than one element
            raise TypeError(f"metric {name!r} must be a scalar, got shape {tuple(value.shape)}") from err
    if isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"metric {name!r} must be a scalar, got {type(value).__name__}")


class MetricsLogger:
    """Append-only JSONL metrics of one run, with a plot.

    Args:
        out_dir: run folder (created if missing); the file is ``out_dir / "metrics.jsonl"``.

    Example::

        metrics = MetricsLogger(run_dir)
        metrics.truncate_after(resume_step)  # only when resuming
        for step in range(resume_step, total_steps):
            ...
            metrics.log(step, loss=loss, lr=scheduler.get_last_lr()[0])
        metrics.plot("loss.png", keys=("loss", "lr"))
    """

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / METRICS_FILENAME
        self._file = self.path.open("a", encoding="utf-8")

    def log(self, step: int, **scalars: Any) -> dict[str, Any]:
        """Append ``{"step": step, **scalars}`` as one line and flush it to the OS.

        Args:
            step: optimizer step (int).
            **scalars: floats, ints, strings, or 0-d tensors / numpy scalars (converted with ``.item()``).
                Non-finite floats are written as ``NaN`` / ``Infinity`` (Python's json reads them back).

        Returns:
            The record written.
        """
        record: dict[str, Any] = {"step": int(step)}
        record.update({name: _to_scalar(name, value) for name, value in scalars.items()})
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        return record

    def truncate_after(self, step: int) -> int:
        """Drop the records with ``record["step"] >= step`` (before a run resumed at ``step``).

        The file is rewritten atomically (temporary file + ``os.replace``); malformed lines are dropped.

        Args:
            step: first step the resumed run will log again.

        Returns:
            The number of records removed.
        """
        self._file.close()
        records = read_metrics(self.path)
        kept = [r for r in records if r.get("step", -1) < step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        os.replace(tmp, self.path)
        self._file = self.path.open("a", encoding="utf-8")
        removed = len(records) - len(kept)
        if removed:
            logger.info("dropped %d metric records at step >= %d from %s", removed, step, self.path)
        return removed

    def records(self) -> list[dict[str, Any]]:
        """All records logged so far (read back from the file)."""
        self._file.flush()
        return read_metrics(self.path)

    def plot(self, path: str | os.PathLike = "loss.png", keys: Sequence[str] | None = ("loss",)) -> Path:
        """Draw each key against step, one panel per key, into a PNG.

        Uses matplotlib's Agg canvas directly (no pyplot global state, works headless and in threads).

        Args:
            path: output file; a relative path is taken inside ``out_dir``.
            keys: metrics to draw; None draws every numeric metric. Keys never logged get an empty
                panel saying so; non-finite values are skipped.

        Returns:
            The path of the PNG written.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        records = self.records()
        if keys is None:
            keys = _numeric_keys(records)
        keys = list(keys) or ["loss"]
        out = Path(path)
        if not out.is_absolute():
            out = self.out_dir / out

        fig = Figure(figsize=(6.0, 2.5 * len(keys)), dpi=100)
        FigureCanvasAgg(fig)
        axes = fig.subplots(len(keys), 1, squeeze=False)[:, 0]
        for ax, key in zip(axes, keys, strict=True):
            points = [
                (r["step"], float(r[key]))
                for r in records
                if isinstance(r.get(key), numbers.Real)
                and not isinstance(r.get(key), bool)
                and math.isfinite(r[key])
            ]
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, linewidth=1.2)
            else:
                ax.text(0.5, 0.5, f"no '{key}' logged", ha="center", va="center", transform=ax.transAxes)
            ax.set_ylabel(key)
            ax.grid(True, alpha=0.3)
        axes[-1].set_xlabel("step")
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format="png")
        return out

    def close(self) -> None:
        """Close the file (further :meth:`log` calls fail)."""
        self._file.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _numeric_keys(records: Iterable[dict[str, Any]]) -> list[str]:
    """Numeric metric names in first-seen order, without ``step``."""
    keys: dict[str, None] = {}
    for record in records:
        for key, value in record.items():
            if key != "step" and isinstance(value, numbers.Real) and not isinstance(value, bool):
                keys.setdefault(key)
    return list(keys)
