"""Small file writers shared by the training-data tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf


def write_wav(path: Path, seconds: float = 0.3, frequency: float = 220.0) -> Path:
    """A 16 kHz mono sine tone at -10 dBFS."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32), 16000)
    return path


def write_lines(path: Path, lines: list) -> Path:
    """A JSONL file: dicts are dumped, strings written as they are (bad lines, blank lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path
