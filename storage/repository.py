"""``Repository``: everything the app stores, behind a few typed methods.

Each method runs in its own short transaction and commits before returning, so several threads
and processes can write at once (on SQLite, writers queue on the write lock, see ``storage.db``).
Methods return the immutable records of ``storage.records``, never live ORM objects.

A turn's life cycle::

    turn_id = repo.start_turn(...)          # row with status "running", written BEFORE generation
    repo.finish_turn(turn_id, ...)          # -> "done"      (or cancel_turn -> "cancelled",
                                            #                     fail_turn   -> "error")

A crash in between leaves the ``running`` row behind; ``fail_interrupted_turns`` marks such rows
as errors when the app starts again.

Votes: a comparison can be voted on only when both turns are ``done``. A second vote on the same
comparison raises ``VoteRefusedError`` unless ``overwrite=True`` is passed (the app's "change my
vote" button); the default protects against double clicks and two tabs silently overwriting.

Compare tab: give each side its own conversation (``create_conversation`` twice), so that each
side's later turns see their own history.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from storage.audio_store import AudioStore
from storage.db import init_db, write_engine
from storage.models import MODES, RATINGS, VOTES, Comparison, Conversation, Feedback, Turn, utc_now
from storage.records import (
    ComparisonRecord,
    ConversationRecord,
    FeedbackRecord,
    PreferencePair,
    Stats,
    TurnRecord,
    WinRate,
    to_record,
)
from storage.summaries import compute_stats, compute_win_rates, load_preference_pair, preference_pair_ids
from storage.validation import (
    TIMING_FIELDS,
    NotFoundError,
    TurnStateError,
    VoteRefusedError,
    check_choice,
    check_json,
    check_timings,
    check_tokens,
)

logger = logging.getLogger(__name__)

INTERRUPTED_MESSAGE = "interrupted: the app stopped before the reply finished"
__all__ = ["TIMING_FIELDS", "NotFoundError", "Repository", "TurnStateError", "VoteRefusedError"]

AudioInput = bytes | str | os.PathLike


class Repository:
    """The app's storage: database rows plus content-addressed audio files.

    Args:
        url: SQLAlchemy URL or SQLite file path; None: ``$DRVOICE_DB_URL``, else
            ``<data_dir>/drvoice.sqlite3``. The database is upgraded to the newest schema.
        data_dir: folder for audio files (and the default SQLite file).
        engine: an existing engine to use instead of ``url`` (already migrated).
    """

    def __init__(
        self,
        url: str | os.PathLike | None = None,
        data_dir: str | os.PathLike = "data",
        *,
        engine: Engine | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.audio = AudioStore(self.data_dir)
        self.engine = engine if engine is not None else init_db(url, data_dir=self.data_dir)
        self._read_sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(write_engine(self.engine), expire_on_commit=False)

    def close(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self._write_sessions.begin() as session:
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._read_sessions() as session:
            yield session

    def audio_path(self, relative: str) -> Path:
        """Absolute path of an audio file given its stored relative path."""
        return self.audio.path(relative)

    # ---- conversations ----------------------------------------------------------------------

    def create_conversation(
        self, checkpoint_id: str, session_id: str | None = None, title: str | None = None
    ) -> str:
        """Start a conversation on ``checkpoint_id``. Returns its id."""
        with self._write() as session:
            conversation = Conversation(checkpoint_id=checkpoint_id, session_id=session_id, title=title)
            session.add(conversation)
            session.flush()
            return conversation.id

    def get_conversation(self, conversation_id: str) -> ConversationRecord:
        with self._read() as session:
            return to_record(ConversationRecord, _get(session, Conversation, conversation_id))

    def list_conversations(
        self, limit: int = 50, offset: int = 0, session_id: str | None = None
    ) -> list[ConversationRecord]:
        """Newest first."""
        query = select(Conversation).order_by(Conversation.created_at.desc(), Conversation.id)
        if session_id is not None:
            query = query.where(Conversation.session_id == session_id)
        with self._read() as session:
            rows = session.scalars(query.limit(limit).offset(offset))
            return [to_record(ConversationRecord, row) for row in rows]

    def history(self, conversation_id: str) -> list[TurnRecord]:
        """All turns of a conversation, in order (any status)."""
        query = select(Turn).where(Turn.conversation_id == conversation_id).order_by(Turn.turn_index)
        with self._read() as session:
            _get(session, Conversation, conversation_id)
            return [to_record(TurnRecord, row) for row in session.scalars(query)]

    # ---- turns --------------------------------------------------------------------------------

    def start_turn(
        self,
        conversation_id: str,
        mode: str,
        system_prompt: str,
        user_text: str | None = None,
        user_audio: AudioInput | None = None,
        checkpoint_id: str | None = None,
        sampling: Mapping[str, Any] | None = None,
    ) -> str:
        """Record a new turn with status ``running``; call this before generating.

        Args:
            conversation_id: the conversation the turn belongs to.
            mode: one of ``MODES``.
            system_prompt: the system prompt sent to the model.
            user_text: the typed input, if any.
            user_audio: the user's recording as encoded bytes (wav, ...) or a file path; copied
                into the audio store.
            checkpoint_id: defaults to the conversation's checkpoint.
            sampling: JSON-serializable settings (temperature, top_p, top_k, repetition_penalty,
                seed, ...).

        Returns:
            The turn id.
        """
        check_choice("mode", mode, MODES)
        sampling = dict(sampling or {})
        check_json("sampling", sampling)
        user_audio_path = self.audio.put(user_audio) if user_audio is not None else None
        with self._write() as session:
            conversation = _get(session, Conversation, conversation_id)
            last_index = session.scalar(
                select(func.max(Turn.turn_index)).where(Turn.conversation_id == conversation_id)
            )
            turn = Turn(
                conversation_id=conversation_id,
                turn_index=0 if last_index is None else last_index + 1,
                mode=mode,
                system_prompt=system_prompt,
                user_text=user_text,
                user_audio_path=user_audio_path,
                checkpoint_id=checkpoint_id or conversation.checkpoint_id,
                sampling=sampling,
                status="running",
            )
            session.add(turn)
            session.flush()
            return turn.id

    def finish_turn(
        self,
        turn_id: str,
        *,
        reply_text: str,
        transcript: str | None = None,
        draft_text: str | None = None,
        speech_tokens: Sequence[int] | None = None,
        reply_audio: AudioInput | None = None,
        timings: Mapping[str, float | None] | None = None,
        status: str = "done",
    ) -> TurnRecord:
        """Store the reply of a ``running`` turn and set its final status.

        Args:
            turn_id: from ``start_turn``.
            reply_text: the assistant's (parallel or text-only) reply.
            transcript: chain modes STC/SUC: the transcript phase.
            draft_text: chain modes STC/SAC: the text response phase.
            speech_tokens: the generated 25 Hz speech codes, exactly as sampled.
            reply_audio: the reply waveform as encoded bytes (wav) or a file path.
            timings: any of ``TIMING_FIELDS``; other keys raise ``ValueError``.
            status: ``"done"``, or ``"cancelled"`` for a partial reply (see ``cancel_turn``).

        Returns:
            The updated turn.
        """
        check_choice("status", status, ("done", "cancelled"))
        tokens = check_tokens(speech_tokens) if speech_tokens is not None else None
        timing_values = check_timings(timings or {})
        reply_audio_path = self.audio.put(reply_audio) if reply_audio is not None else None
        with self._write() as session:
            turn = _get_running(session, turn_id)
            turn.reply_text = reply_text
            turn.transcript = transcript
            turn.draft_text = draft_text
            turn.speech_tokens = tokens
            turn.reply_audio_path = reply_audio_path
            for name, value in timing_values.items():
                setattr(turn, name, value)
            turn.status = status
            turn.finished_at = utc_now()
            session.flush()
            return to_record(TurnRecord, turn)

    def cancel_turn(
        self,
        turn_id: str,
        *,
        reply_text: str | None = None,
        transcript: str | None = None,
        draft_text: str | None = None,
        speech_tokens: Sequence[int] | None = None,
        reply_audio: AudioInput | None = None,
        timings: Mapping[str, float | None] | None = None,
    ) -> TurnRecord:
        """The user stopped generation: keep what was produced so far, status ``cancelled``."""
        return self.finish_turn(
            turn_id,
            reply_text=reply_text or "",
            transcript=transcript,
            draft_text=draft_text,
            speech_tokens=speech_tokens,
            reply_audio=reply_audio,
            timings=timings,
            status="cancelled",
        )

    def fail_turn(self, turn_id: str, message: str) -> TurnRecord:
        """Generation raised: status ``error`` with the message."""
        with self._write() as session:
            turn = _get_running(session, turn_id)
            turn.status = "error"
            turn.error_message = message
            turn.finished_at = utc_now()
            session.flush()
            return to_record(TurnRecord, turn)

    def fail_interrupted_turns(
        self, started_before: datetime | None = None, message: str = INTERRUPTED_MESSAGE
    ) -> int:
        """Mark ``running`` turns left by a crashed process as ``error``. Returns how many.

        Args:
            started_before: only turns created before this time (default: now). With several app
                processes on one database, pass the time this process started.
        """
        started_before = started_before or utc_now()
        with self._write() as session:
            result = session.execute(
                update(Turn)
                .where(Turn.status == "running", Turn.created_at < started_before)
                .values(status="error", error_message=message, finished_at=utc_now())
            )
            return result.rowcount

    def get_turn(self, turn_id: str) -> TurnRecord:
        with self._read() as session:
            return to_record(TurnRecord, _get(session, Turn, turn_id))

    def list_turns(
        self,
        limit: int = 50,
        offset: int = 0,
        *,
        status: str | None = None,
        mode: str | None = None,
    ) -> list[TurnRecord]:
        """Newest first, optionally filtered by status and mode."""
        query = select(Turn).order_by(Turn.created_at.desc(), Turn.id)
        if status is not None:
            query = query.where(Turn.status == status)
        if mode is not None:
            query = query.where(Turn.mode == mode)
        with self._read() as session:
            rows = session.scalars(query.limit(limit).offset(offset))
            return [to_record(TurnRecord, row) for row in rows]

    # ---- comparisons, votes and feedback ------------------------------------------------------

    def create_comparison(
        self,
        turn_a_id: str,
        turn_b_id: str,
        label_a: str,
        label_b: str,
        blinded: bool = True,
        session_id: str | None = None,
    ) -> str:
        """Record two turns shown side by side. Labels say what each side was (mode or checkpoint)."""
        if turn_a_id == turn_b_id:
            raise ValueError("a comparison needs two different turns")
        with self._write() as session:
            _get(session, Turn, turn_a_id)
            _get(session, Turn, turn_b_id)
            comparison = Comparison(
                turn_a_id=turn_a_id,
                turn_b_id=turn_b_id,
                label_a=label_a,
                label_b=label_b,
                blinded=blinded,
                session_id=session_id,
            )
            session.add(comparison)
            session.flush()
            return comparison.id

    def vote(
        self, comparison_id: str, vote: str, comment: str | None = None, *, overwrite: bool = False
    ) -> ComparisonRecord:
        """Record the user's verdict.

        Args:
            comparison_id: from ``create_comparison``.
            vote: ``"A"``, ``"B"``, ``"tie"`` or ``"both_bad"``.
            comment: free text.
            overwrite: replace an earlier vote instead of refusing.

        Raises:
            ValueError: unknown vote value.
            VoteRefusedError: a turn is not ``done`` yet, or already voted and not ``overwrite``.
        """
        check_choice("vote", vote, VOTES)
        with self._write() as session:
            comparison = _get(session, Comparison, comparison_id)
            for side, turn_id in (("A", comparison.turn_a_id), ("B", comparison.turn_b_id)):
                status = session.scalar(select(Turn.status).where(Turn.id == turn_id))
                if status != "done":
                    raise VoteRefusedError(f"turn {side} ({turn_id}) is {status!r}, not 'done'")
            if comparison.vote is not None and not overwrite:
                raise VoteRefusedError(
                    f"comparison {comparison_id} already has vote {comparison.vote!r} "
                    "(pass overwrite=True to change it)"
                )
            comparison.vote = vote
            comparison.comment = comment
            comparison.voted_at = utc_now()
            session.flush()
            return to_record(ComparisonRecord, comparison)

    def get_comparison(self, comparison_id: str) -> ComparisonRecord:
        with self._read() as session:
            return to_record(ComparisonRecord, _get(session, Comparison, comparison_id))

    def list_comparisons(self, limit: int = 50, offset: int = 0) -> list[ComparisonRecord]:
        """Newest first."""
        query = select(Comparison).order_by(Comparison.created_at.desc(), Comparison.id)
        with self._read() as session:
            rows = session.scalars(query.limit(limit).offset(offset))
            return [to_record(ComparisonRecord, row) for row in rows]

    def add_feedback(self, turn_id: str, rating: int, comment: str | None = None) -> str:
        """Like (+1) or dislike (-1) a turn. Returns the feedback id."""
        if isinstance(rating, bool) or rating not in RATINGS:
            raise ValueError(f"rating must be one of {RATINGS}, got {rating!r}")
        with self._write() as session:
            _get(session, Turn, turn_id)
            feedback = Feedback(turn_id=turn_id, rating=rating, comment=comment)
            session.add(feedback)
            session.flush()
            return feedback.id

    def list_feedback(self, turn_id: str) -> list[FeedbackRecord]:
        query = select(Feedback).where(Feedback.turn_id == turn_id).order_by(Feedback.created_at)
        with self._read() as session:
            return [to_record(FeedbackRecord, row) for row in session.scalars(query)]

    # ---- summaries ----------------------------------------------------------------------------

    def stats(self) -> Stats:
        """Counts for the admin page (see ``storage.records.Stats``)."""
        with self._read() as session:
            return compute_stats(session)

    def win_rates(self) -> list[WinRate]:
        """Per pair of labels, wins / losses / ties / both_bad of the alphabetically first label.

        A comparison of (X as A, Y as B) and one of (Y as A, X as B) count towards the same pair.
        """
        with self._read() as session:
            return compute_win_rates(session)

    def iter_preference_pairs(self) -> Iterator[PreferencePair]:
        """Comparisons voted A or B, oldest vote first, as (chosen, rejected) pairs.

        Ties and both_bad give no pair. ``history`` comes from the chosen turn's conversation.
        Each pair is read in its own short transaction, so a long export never holds one open.
        """
        with self._read() as session:
            comparison_ids = preference_pair_ids(session)
        for comparison_id in comparison_ids:
            with self._read() as session:
                pair = load_preference_pair(session, comparison_id)
            if pair is not None:  # None: deleted or re-voted tie since the listing
                yield pair

    # ---- admin --------------------------------------------------------------------------------

    def delete_turn(self, turn_id: str) -> None:
        """Delete a turn, its comparisons and feedback, and its audio files unless shared.

        Admin only: a ``start_turn`` storing the very same audio bytes at this moment (its file is
        written before its row) could be left pointing at the removed file.
        """
        with self._write() as session:
            turn = _get(session, Turn, turn_id)
            paths = {p for p in (turn.user_audio_path, turn.reply_audio_path) if p}
            session.execute(delete(Turn).where(Turn.id == turn_id))  # cascades in the database
            # Remove files while still holding the write lock, so no new row can claim them.
            for path in paths - _referenced_paths(session, paths):
                self.audio.delete(path)

    def delete_conversation(self, conversation_id: str) -> None:
        """Delete a conversation with all its turns (and their comparisons, feedback, audio)."""
        with self._write() as session:
            _get(session, Conversation, conversation_id)
            rows = session.execute(
                select(Turn.user_audio_path, Turn.reply_audio_path).where(
                    Turn.conversation_id == conversation_id
                )
            ).all()
            paths = {p for row in rows for p in row if p}
            session.execute(delete(Conversation).where(Conversation.id == conversation_id))
            for path in paths - _referenced_paths(session, paths):
                self.audio.delete(path)

    def delete_all(self) -> dict[str, int]:
        """Delete every row and audio file. Returns the number of rows deleted per table."""
        counts: dict[str, int] = {}
        with self._write() as session:
            for model in (Feedback, Comparison, Turn, Conversation):
                counts[model.__tablename__] = session.execute(delete(model)).rowcount
            for path in self.audio.files():
                self.audio.delete(path)
        logger.warning("deleted all stored data: %s", counts)
        return counts


# ---- helpers ----------------------------------------------------------------------------------


def _get(session: Session, model: type, row_id: str) -> Any:
    row = session.get(model, row_id)
    if row is None:
        raise NotFoundError(f"no {model.__tablename__} row with id {row_id!r}")
    return row


def _get_running(session: Session, turn_id: str) -> Turn:
    turn = _get(session, Turn, turn_id)
    if turn.status != "running":
        raise TurnStateError(f"turn {turn_id} is {turn.status!r}, not 'running'")
    return turn


def _referenced_paths(session: Session, paths: set[str]) -> set[str]:
    if not paths:
        return set()
    rows = session.execute(
        select(Turn.user_audio_path, Turn.reply_audio_path).where(
            or_(Turn.user_audio_path.in_(paths), Turn.reply_audio_path.in_(paths))
        )
    ).all()
    return {p for row in rows for p in row if p in paths}
