"""Callbacks of the Data tab: counts, recent turns with playback, win rates, admin actions.

Reading is open to every visitor; the JSONL export and the deletion of everything need the admin
token (``$DRVOICE_ADMIN_TOKEN``) and are disabled when it is not set.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gradio as gr
import soundfile as sf

from app.context import AppContext, UserError
from app.turns import mode_label
from storage.export import export_preference_pairs

logger = logging.getLogger(__name__)

TURN_COLUMNS = [
    "time (UTC)",
    "mode",
    "status",
    "user",
    "reply",
    "first text ms",
    "first audio ms",
    "RTF",
    "turn id",
]
WIN_COLUMNS = ["label", "opponent", "wins", "losses", "ties", "both bad", "win rate"]
PAIR_COLUMNS = ["A vs B", "A", "B", "tie", "both_bad", "pending"]
RECENT_TURNS = 50


class DataHandlers:
    """Callbacks of the Data tab."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def refresh(self) -> tuple[str, list[list], list[list], list[list]]:
        """(counts Markdown, votes by pair rows, win-rate rows, recent turn rows)."""
        stats = self.ctx.repo.stats()
        by_status = ", ".join(f"{k} {v}" for k, v in sorted(stats.turns_by_status.items())) or "none"
        by_mode = ", ".join(f"{k} {v}" for k, v in sorted(stats.turns_by_mode.items())) or "none"
        votes = ", ".join(f"{k} {v}" for k, v in sorted(stats.votes.items())) or "none"
        counts = (
            f"**{stats.conversations}** conversations · **{stats.turns}** turns ({by_status}) · "
            f"**{stats.comparisons}** comparisons ({votes}) · 👍 {stats.likes} · 👎 {stats.dislikes}\n\n"
            f"Turns by mode: {by_mode}"
        )
        pairs = [
            [pair, *(counts.get(k, 0) for k in PAIR_COLUMNS[1:])]
            for pair, counts in sorted(stats.votes_by_label_pair.items())
        ]
        wins = [
            [w.label, w.opponent, w.wins, w.losses, w.ties, w.both_bad, _percent(w.win_rate)]
            for w in self.ctx.repo.win_rates()
        ]
        turns = [
            [
                t.created_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
                if t.created_at.tzinfo
                else t.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                t.mode,
                t.status,
                _short(t.user_text or ("🎤 audio" if t.user_audio_path else "")),
                _short(t.reply_text or t.error_message or ""),
                _round(t.time_to_first_text_ms),
                _round(t.time_to_first_audio_ms),
                None if t.real_time_factor is None else round(t.real_time_factor, 3),
                t.id,
            ]
            for t in self.ctx.repo.list_turns(limit=RECENT_TURNS)
        ]
        return counts, pairs, wins, turns

    def select_turn(self, event: gr.SelectData) -> tuple[Any, Any, dict]:
        """A click on a recent-turns row: (user audio, reply audio, details)."""
        row = event.row_value or []
        turn_id = row[-1] if row else None
        if not turn_id:
            return None, None, {}
        try:
            turn = self.ctx.repo.get_turn(turn_id)
        except Exception as error:
            return None, None, {"error": str(error)}
        details = {
            "turn_id": turn.id,
            "conversation_id": turn.conversation_id,
            "mode": mode_label(turn.mode),
            "checkpoint": turn.checkpoint_id,
            "status": turn.status,
            "user_text": turn.user_text,
            "transcript": turn.transcript,
            "draft_text": turn.draft_text,
            "reply_text": turn.reply_text,
            "speech_tokens": len(turn.speech_tokens) if turn.speech_tokens else 0,
            "sampling": turn.sampling,
            "time_to_first_text_ms": turn.time_to_first_text_ms,
            "time_to_first_audio_ms": turn.time_to_first_audio_ms,
            "real_time_factor": turn.real_time_factor,
            "error": turn.error_message,
            "feedback": [
                {"rating": f.rating, "comment": f.comment} for f in self.ctx.repo.list_feedback(turn.id)
            ],
        }
        return self._audio(turn.user_audio_path), self._audio(turn.reply_audio_path), details

    def _audio(self, relative: str | None) -> tuple[int, Any] | None:
        """A stored file as (rate, samples): served through Gradio's cache, never from the data dir."""
        if not relative:
            return None
        path = self.ctx.repo.audio_path(relative)
        try:
            samples, rate = sf.read(str(path), dtype="int16")
        except Exception as error:  # deleted or unreadable: show the rest of the row anyway
            logger.warning("cannot read %s: %s", path, error)
            return None
        return rate, samples

    def export(self, token: str | None) -> tuple[str | None, str]:
        """Preference pairs as a JSONL download. Returns (file path, status)."""
        try:
            self.ctx.check_admin(token)
        except UserError as error:
            return None, f"⚠️ **{error}**"
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        out = Path(tempfile.mkdtemp(prefix="drvoice-export-")) / f"drvoice-preference-pairs-{stamp}.jsonl"
        count = export_preference_pairs(self.ctx.repo, out)
        return str(out), f"Exported {count} preference pairs (votes A / B; ties and both-bad give none)."

    def delete_all(self, token: str | None, confirmed: bool) -> str:
        """Deletes every conversation, turn, vote, rating and audio file."""
        try:
            self.ctx.check_admin(token)
        except UserError as error:
            return f"⚠️ **{error}**"
        if not confirmed:
            return "⚠️ **Tick the confirmation box first: this cannot be undone.**"
        counts = self.ctx.repo.delete_all()
        return "Deleted: " + ", ".join(f"{n} {table}" for table, n in counts.items()) + "."


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"
