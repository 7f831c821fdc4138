"""Turning engine events into what the page shows: chat messages, audio chunks, metrics.

``TurnView`` accumulates the events of one turn. Chain modes (STC / SAC / SUC) show their text
phases as separate, collapsible "thought" messages titled *Transcript* and *Text response*
above the spoken reply, so the three phases stay distinct while they stream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from app.turns import TurnOutcome, mode_label
from core.audio import audio_to_wav_bytes, save_wav
from core.modes import MODES
from core.types import AudioChunk, Done, PhaseStart, TextDelta, Timings, Waveform

PHASE_TITLES = {
    "transcript": "📝 Transcript (what the model heard)",
    "draft": "💭 Text response (chain phase, before speaking)",
}


class TurnView:
    """The display state of one streaming turn.

    Args:
        mode: the mode abbreviation.
    """

    def __init__(self, mode: str) -> None:
        self.mode = MODES[mode]
        self.text = {"transcript": "", "draft": "", "reply": ""}
        self.phase: str | None = None
        self.outcome: TurnOutcome | None = None
        self._pending: list[np.ndarray] = []  # audio chunks not yet handed to the page
        self.sample_rate = 0
        self.audio_chunks = 0

    def apply(self, event: Any) -> None:
        """Takes one engine event (or the job's final ``TurnOutcome``)."""
        if isinstance(event, TextDelta):
            self.text[event.phase] += event.text
        elif isinstance(event, PhaseStart):
            self.phase = event.phase
        elif isinstance(event, AudioChunk):
            self._pending.append(event.samples)
            self.sample_rate = event.sample_rate
            self.audio_chunks += 1
        elif isinstance(event, Done):
            pass  # the outcome that follows carries the same, as stored
        elif isinstance(event, TurnOutcome):
            self.outcome = event
            if event.status != "error":
                self.text.update(transcript=event.transcript, draft=event.draft, reply=event.reply_text)

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    def take_audio(self) -> bytes | None:
        """New audio since the last call as a WAV chunk (what a streaming ``gr.Audio`` takes)."""
        if not self._pending:
            return None
        samples, self._pending = np.concatenate(self._pending), []
        return audio_to_wav_bytes(Waveform(samples, self.sample_rate))

    # ---- rendering -------------------------------------------------------------------------------

    def messages(self, audio_file: str | None = None) -> list[dict]:
        """The assistant messages of this turn for ``gr.Chatbot`` (chain phases first)."""
        pending = not self.finished
        out = []
        for phase in ("transcript", "draft"):
            has_phase = self.mode.has_transcript if phase == "transcript" else self.mode.has_draft
            if has_phase and (self.text[phase] or self.phase == phase):
                done = not pending or self.phase not in (phase, None)
                metadata = {"title": PHASE_TITLES[phase]}
                if not done:
                    metadata["status"] = "pending"  # a spinner; no status once done keeps the phase open
                out.append(
                    {"role": "assistant", "content": self.text[phase].strip() or "…", "metadata": metadata}
                )
        reply = self.text["reply"].strip()
        if self.outcome is not None and self.outcome.status == "error":
            out.append({"role": "assistant", "content": f"⚠️ {self.outcome.error}"})
        elif reply or not pending:
            footer = self.footer()
            content = (reply or "*(no reply)*") + (f"\n\n{footer}" if footer else "")
            out.append({"role": "assistant", "content": content})
        if audio_file:
            out.append({"role": "assistant", "content": {"path": audio_file, "mime_type": "audio/wav"}})
        return out

    def footer(self) -> str:
        """One italic line under a finished reply: status and timings."""
        if self.outcome is None:
            return ""
        parts = []
        if self.outcome.status == "cancelled":
            parts.append("stopped")
        metrics = format_timings(self.outcome.timings, self.mode.speech_output)
        if metrics:
            parts.append(metrics)
        parts.append(self.mode.name)
        return "*" + " · ".join(parts) + "*"

    def markdown(self) -> str:
        """The whole turn as Markdown (the Compare tab's panels)."""
        blocks = []
        for phase in ("transcript", "draft"):
            if self.text[phase].strip():
                title = PHASE_TITLES[phase]
                blocks.append(f"**{title}**\n\n> " + self.text[phase].strip().replace("\n", "\n> "))
        if self.outcome is not None and self.outcome.status == "error":
            blocks.append(f"⚠️ {self.outcome.error}")
        elif self.text["reply"].strip():
            blocks.append(self.text["reply"].strip())
        elif not self.finished:
            blocks.append("*…*")
        return "\n\n".join(blocks)

    def metrics_markdown(self) -> str:
        """Timings of the finished turn ("" while it streams)."""
        if self.outcome is None or self.outcome.timings is None:
            return ""
        status = " (stopped)" if self.outcome.status == "cancelled" else ""
        return f"{format_timings(self.outcome.timings, self.mode.speech_output)}{status}"

    def save_reply_audio(self, directory: Path) -> str | None:
        """Writes the finished reply's waveform to ``directory``; returns the path (None: no audio)."""
        if self.outcome is None or self.outcome.audio is None or self.outcome.turn_id is None:
            return None
        return str(save_wav(directory / f"{self.outcome.turn_id}.wav", self.outcome.audio))


def format_timings(timings: Timings | None, speech_output: bool) -> str:
    """'first text 120 ms · first audio 310 ms · RTF 0.42 · 2.3 s of speech'."""
    if timings is None:
        return ""
    parts = [f"first text {format_ms(timings.time_to_first_text)}"]
    if speech_output:
        parts.append(f"first audio {format_ms(timings.time_to_first_audio)}")
        rtf = timings.real_time_factor
        parts.append(f"RTF {rtf:.2f}" if rtf is not None else "RTF –")
        parts.append(f"{timings.audio_seconds:.1f} s of speech")
    else:
        parts.append(f"total {format_ms(timings.total_time)}")
    return " · ".join(parts)


def format_ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def user_messages(turn_mode: str, text: str | None, audio_path: str | None) -> list[dict]:
    """The user's side of a turn for ``gr.Chatbot``: the recording and/or the typed text."""
    out = []
    if audio_path and MODES[turn_mode].speech_input:
        out.append({"role": "user", "content": {"path": audio_path}})
    if text and not MODES[turn_mode].speech_input:
        out.append({"role": "user", "content": text})
    if not out:
        out.append({"role": "user", "content": f"*({mode_label(turn_mode)})*"})
    return out
