"""ORM tables of the DrVoice app database (DESIGN §7).

Four tables:

- ``conversations``: one chat session (or one side of an A/B comparison) on one checkpoint.
- ``turns``: one user request and the assistant reply, including the generated speech tokens (so
  DPO can score the exact sequence), sampling settings, timings and a status that is written as
  ``running`` *before* generation starts (a crash leaves a visible ``running`` row).
- ``comparisons``: two turns shown side by side and the user's vote.
- ``feedback``: a like / dislike (+ comment) on one turn.

Every schema change goes through a new revision in ``storage/migrations/versions`` (the tests
check that the migrations at head and these models agree).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The seven interaction patterns of the paper (Table 1; DESIGN §4).
MODES: tuple[str, ...] = ("S2M", "S2T", "T2M", "T2T", "STC", "SAC", "SUC")
# Life cycle of a turn: running -> done | error | cancelled.
TURN_STATUSES: tuple[str, ...] = ("running", "done", "error", "cancelled")
# A/B votes; only "A" and "B" become preference pairs.
VOTES: tuple[str, ...] = ("A", "B", "tie", "both_bad")
# Feedback ratings: +1 like, -1 dislike.
RATINGS: tuple[int, ...] = (1, -1)

# Explicit constraint names, so migrations (and SQLite batch mode) can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    """A random UUID4 as a 36-character string (the primary key of every table)."""
    return str(uuid.uuid4())


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def _in(column: str, values: tuple) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UTCDateTime(TypeDecorator):
    """Stores naive UTC (portable across SQLite and PostgreSQL), returns aware UTC datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC (storage.models.utc_now)")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now, index=True)
    checkpoint_id: Mapped[str] = mapped_column(String(255))  # checkpoint the conversation started on
    session_id: Mapped[str | None] = mapped_column(String(255), index=True)  # browser / client session
    title: Mapped[str | None] = mapped_column(String(255))


class Turn(Base):
    __tablename__ = "turns"
    __table_args__ = (
        CheckConstraint(_in("mode", MODES), name="mode"),
        CheckConstraint(_in("status", TURN_STATUSES), name="status"),
        Index("ix_turns_conversation_id_turn_index", "conversation_id", "turn_index", unique=True),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    turn_index: Mapped[int] = mapped_column(Integer)  # 0, 1, 2, ... within the conversation
    mode: Mapped[str] = mapped_column(String(8))  # one of MODES
    system_prompt: Mapped[str] = mapped_column(Text)
    user_text: Mapped[str | None] = mapped_column(Text)  # typed input (T2M/T2T), else None
    user_audio_path: Mapped[str | None] = mapped_column(String(512))  # relative to the data dir
    transcript: Mapped[str | None] = mapped_column(Text)  # chain modes STC/SUC: ASR phase
    draft_text: Mapped[str | None] = mapped_column(Text)  # chain modes STC/SAC: text response phase
    reply_text: Mapped[str | None] = mapped_column(Text)  # the (parallel or text-only) reply
    speech_tokens: Mapped[list[int] | None] = mapped_column(JSON)  # generated 25 Hz codes
    reply_audio_path: Mapped[str | None] = mapped_column(String(512))  # relative to the data dir
    checkpoint_id: Mapped[str] = mapped_column(String(255))
    sampling: Mapped[dict[str, Any]] = mapped_column(JSON)  # temperature, top_p, top_k, seed, ...
    time_to_first_text_ms: Mapped[float | None] = mapped_column(Float)
    time_to_first_audio_ms: Mapped[float | None] = mapped_column(Float)
    real_time_factor: Mapped[float | None] = mapped_column(Float)  # generation time / audio length
    audio_seconds: Mapped[float | None] = mapped_column(Float)  # length of the reply audio
    status: Mapped[str] = mapped_column(String(16), default="running", index=True)  # TURN_STATUSES
    error_message: Mapped[str | None] = mapped_column(Text)  # added in revision 0002
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Comparison(Base):
    __tablename__ = "comparisons"
    __table_args__ = (CheckConstraint(f"vote IS NULL OR {_in('vote', VOTES)}", name="vote"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    turn_a_id: Mapped[str] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    turn_b_id: Mapped[str] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    label_a: Mapped[str] = mapped_column(String(255))  # what side A was: a mode or a checkpoint id
    label_b: Mapped[str] = mapped_column(String(255))
    blinded: Mapped[bool] = mapped_column(Boolean, default=True)  # labels hidden from the voter
    vote: Mapped[str | None] = mapped_column(String(16))  # one of VOTES, None until voted
    comment: Mapped[str | None] = mapped_column(Text)  # added in revision 0002
    voted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    session_id: Mapped[str | None] = mapped_column(String(255))


class Feedback(Base):
    """Added in revision 0002."""

    __tablename__ = "feedback"
    __table_args__ = (CheckConstraint(_in("rating", RATINGS), name="rating"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    turn_id: Mapped[str] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    rating: Mapped[int] = mapped_column(Integer)  # +1 like, -1 dislike
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
