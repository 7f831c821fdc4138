"""Settings of the app: input limits, concurrency, where things live."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = REPO_ROOT / "checkpoints" / "demo"  # the embedded demo checkpoint (DESIGN §6)
ADMIN_TOKEN_ENV = "DRVOICE_ADMIN_TOKEN"  # export and deletion in the Data tab need this token
GENERATE_QUEUE = "generate"  # concurrency id shared by every event that runs the model


@dataclass(frozen=True)
class Limits:
    """What the app accepts from a user (each refusal is shown as a readable message)."""

    max_upload_mb: float = 20.0  # audio files larger than this are refused before decoding
    max_audio_seconds: float = 60.0  # longer recordings are refused (60 s = 300 LLM positions at 5 Hz)
    min_audio_seconds: float = 0.1  # shorter recordings are refused
    max_text_chars: int = 2000  # longer typed messages are refused
    max_new_steps: int = 600  # cap on the sampling setting (600 LLM steps = 2 min of speech at 5 Hz)
    max_history_turns: int = 8  # earlier exchanges sent back to the model (oldest dropped first)

    def __post_init__(self) -> None:
        if self.max_upload_mb <= 0:
            raise ValueError(f"max_upload_mb must be > 0, got {self.max_upload_mb}")
        if not 0 <= self.min_audio_seconds < self.max_audio_seconds:
            raise ValueError("need 0 <= min_audio_seconds < max_audio_seconds")
        for name in ("max_text_chars", "max_new_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_history_turns < 0:
            raise ValueError(f"max_history_turns must be >= 0, got {self.max_history_turns}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


@dataclass(frozen=True)
class AppSettings:
    """How the app is built (the command line of ``app.py`` maps onto these fields)."""

    limits: Limits = field(default_factory=Limits)
    concurrency_limit: int = 1  # generations running at once (each engine answers one at a time)
    queue_size: int = 64  # requests waiting in the queue before new ones are refused
    stream_audio: bool = True  # stream reply audio while it is generated (needs ffmpeg on PATH)
    admin_token: str | None = None  # None: export and deletion are disabled
    title: str = "DrVoice"

    def __post_init__(self) -> None:
        if self.concurrency_limit < 1:
            raise ValueError(f"concurrency_limit must be >= 1, got {self.concurrency_limit}")
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {self.queue_size}")


def admin_token_from_env() -> str | None:
    """The admin token from ``$DRVOICE_ADMIN_TOKEN``; None (admin actions off) when unset or blank."""
    token = os.environ.get(ADMIN_TOKEN_ENV, "").strip()
    return token or None
