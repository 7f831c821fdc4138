"""Plain, immutable records returned by ``Repository`` (no ORM session attached, safe to pass
between threads and into Gradio callbacks)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypeVar

R = TypeVar("R")


def to_record(cls: type[R], row: Any) -> R:
    """Copy the attributes named by the dataclass ``cls`` from an ORM row."""
    return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class ConversationRecord:
    id: str
    created_at: datetime
    checkpoint_id: str
    session_id: str | None
    title: str | None


@dataclass(frozen=True)
class TurnRecord:
    id: str
    conversation_id: str
    turn_index: int  # 0, 1, 2, ... within the conversation
    mode: str  # S2M, S2T, T2M, T2T, STC, SAC or SUC
    system_prompt: str
    user_text: str | None
    user_audio_path: str | None  # relative to the data dir
    transcript: str | None  # chain modes: the ASR phase
    draft_text: str | None  # chain modes: the text-only response phase
    reply_text: str | None
    speech_tokens: list[int] | None  # generated 25 Hz speech codes (no bos/eos/pad)
    reply_audio_path: str | None  # relative to the data dir
    checkpoint_id: str
    sampling: dict[str, Any]
    time_to_first_text_ms: float | None
    time_to_first_audio_ms: float | None
    real_time_factor: float | None
    audio_seconds: float | None
    status: str  # running, done, error or cancelled
    error_message: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class ComparisonRecord:
    id: str
    turn_a_id: str
    turn_b_id: str
    label_a: str
    label_b: str
    blinded: bool
    vote: str | None  # A, B, tie, both_bad; None until voted
    comment: str | None
    voted_at: datetime | None
    created_at: datetime
    session_id: str | None


@dataclass(frozen=True)
class FeedbackRecord:
    id: str
    turn_id: str
    rating: int  # +1 like, -1 dislike
    comment: str | None
    created_at: datetime


@dataclass(frozen=True)
class Stats:
    conversations: int
    turns: int
    turns_by_status: dict[str, int]  # status -> count
    turns_by_mode: dict[str, int]  # mode -> count
    comparisons: int
    votes: dict[str, int]  # A / B / tie / both_bad / pending -> count
    votes_by_label_pair: dict[str, dict[str, int]]  # "label_a vs label_b" -> vote -> count
    likes: int
    dislikes: int


@dataclass(frozen=True)
class WinRate:
    """Head-to-head results of ``label`` against ``opponent`` (both orders of A/B pooled)."""

    label: str
    opponent: str
    wins: int
    losses: int
    ties: int
    both_bad: int

    @property
    def decided(self) -> int:
        """Votes that count towards the win rate (both_bad is left out)."""
        return self.wins + self.losses + self.ties

    @property
    def win_rate(self) -> float | None:
        """(wins + ties / 2) / (wins + losses + ties); None before any such vote."""
        return (self.wins + 0.5 * self.ties) / self.decided if self.decided else None


@dataclass(frozen=True)
class PreferencePair:
    """One voted comparison turned into a DPO pair (see ``storage.export`` for the JSONL form)."""

    comparison: ComparisonRecord
    chosen: TurnRecord
    rejected: TurnRecord
    # Earlier finished turns of the chosen turn's conversation, oldest first:
    # {"role": "user", "text", "audio"} and {"role": "assistant", "text"}.
    history: list[dict[str, Any]]
