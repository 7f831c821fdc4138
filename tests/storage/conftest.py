"""Fixtures for the storage tests: a fresh SQLite file database per test, tiny wav files."""

from __future__ import annotations

import io
import math
import struct
import wave
from collections.abc import Callable
from pathlib import Path

import pytest

from storage import Repository


def make_wav(seconds: float = 0.05, frequency: float = 440.0, sample_rate: int = 16_000) -> bytes:
    """A short mono 16-bit sine wav file."""
    n = int(seconds * sample_rate)
    samples = (int(8000 * math.sin(2 * math.pi * frequency * i / sample_rate)) for i in range(n))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    return buffer.getvalue()


@pytest.fixture
def wav() -> Callable[..., bytes]:
    return make_wav


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'app.sqlite3'}"


@pytest.fixture
def repo(db_url: str, data_dir: Path):
    with Repository(db_url, data_dir) as repository:
        yield repository


@pytest.fixture
def done_turn(repo: Repository) -> Callable[..., str]:
    """Factory: start and finish a turn with a reply, speech tokens and reply audio."""

    def make(conversation_id: str, mode: str = "S2M", reply: str = "hello", tokens=(1, 2, 3), **start) -> str:
        start.setdefault("system_prompt", "You are a helpful assistant.")
        start.setdefault("user_text", "hi")
        turn_id = repo.start_turn(conversation_id, mode, **start)
        repo.finish_turn(
            turn_id,
            reply_text=reply,
            speech_tokens=list(tokens),
            reply_audio=make_wav(frequency=200 + 10 * len(reply) + sum(tokens)),
        )
        return turn_id

    return make
