"""One turn's life cycle, independent of Gradio: validate, record, generate, store.

    turn_input = prepare_input(mode, text, audio, limits)     # UserError / AudioInputError if bad
    job = TurnJob(ctx, checkpoint, conversation_id, turn_input, sampling, cancel)
    for tag, item in run_jobs([job]):                          # engine events, then a TurnOutcome
        ...

The engine runs in a worker thread that owns the turn's row: ``start_turn`` (status ``running``)
before the first model step, then ``finish_turn`` / ``cancel_turn`` / ``fail_turn``. So the row is
completed even when the page that asked for it goes away, and a crash of the whole process leaves
a visible ``running`` row (marked ``error`` at the next start). The callback that reads the
events only renders them; when it is closed early it sets the turn's cancel flag.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.config import Limits
from app.context import AppContext, UserError
from core.audio import AudioInputError, audio_to_wav_bytes, load_audio
from core.engine import ChatRequest, Exchange
from core.modes import MODES, Mode, get_mode
from core.sampling import SamplingConfig
from core.types import AudioChunk, Done, Event, Timings, Waveform

logger = logging.getLogger(__name__)

USER_AUDIO_RATE = 16_000  # Hz; what the speech encoder takes (the engine would resample anyway)
HISTORY_STATUSES = ("done", "cancelled")  # earlier turns that are sent back to the model


@dataclass(frozen=True)
class TurnInput:
    """Validated user input of one turn."""

    mode: str  # S2M, S2T, T2M, T2T, STC, SAC, SUC
    text: str | None  # typed message (text modes)
    audio: Waveform | None  # mono float32 at 16 kHz (speech modes)

    @property
    def audio_wav(self) -> bytes | None:
        """What is stored: the validated recording as 16-bit WAV."""
        return audio_to_wav_bytes(self.audio) if self.audio is not None else None


@dataclass
class TurnOutcome:
    """How a turn ended (the last item a job emits)."""

    turn_id: str | None  # None when the row could not even be written
    status: str  # done, cancelled or error
    mode: str
    checkpoint: str
    reply_text: str = ""
    transcript: str = ""
    draft: str = ""
    speech_tokens: list[int] = field(default_factory=list)
    timings: Timings | None = None
    audio: Waveform | None = None  # the whole reply waveform (speech modes)
    error: str | None = None  # readable message when status == "error"


def prepare_input(mode_name: str, text: str | None, audio: Any, limits: Limits) -> TurnInput:
    """Checks what the user gave against the mode and the limits.

    Args:
        mode_name: the mode abbreviation.
        text: the typed message (may be None or blank).
        audio: a file path, bytes or ``(sample_rate, samples)``; None when nothing was recorded.
        limits: the app's limits.

    Raises:
        UserError: nothing usable was given, or the text is too long.
        AudioInputError: the audio is silent, corrupt, too long, too large, not audio, ...
    """
    try:
        mode = get_mode(mode_name or "")
    except ValueError as error:
        raise UserError(str(error)) from None
    text = (text or "").strip() or None
    if audio is None and text is None:
        raise UserError("Nothing to answer yet: record or upload audio, or type a message.")
    if mode.speech_input:
        if audio is None:
            raise UserError(
                f"{mode_label(mode)} answers speech: record or upload audio, "
                "or pick a text mode (T2M or T2T) for typed messages."
            )
        wave = load_audio(
            audio,
            target_rate=USER_AUDIO_RATE,
            max_seconds=limits.max_audio_seconds,
            max_bytes=limits.max_upload_bytes,
            min_seconds=limits.min_audio_seconds,
        )
        return TurnInput(mode.name, None, wave)
    if text is None:
        raise UserError(
            f"{mode_label(mode)} answers typed text: type a message, "
            "or pick a speech mode (S2M, S2T, STC, SAC, SUC) for recordings."
        )
    if len(text) > limits.max_text_chars:
        raise UserError(f"The message is {len(text)} characters long; the limit is {limits.max_text_chars}.")
    return TurnInput(mode.name, text, None)


def mode_label(mode: Mode | str) -> str:
    """'Speech-to-Multimodal (S2M)'."""
    mode = MODES[mode] if isinstance(mode, str) else mode
    return f"{mode.title} ({mode.name})"


def history_for(ctx: AppContext, conversation_id: str) -> list[Exchange]:
    """Earlier finished exchanges of a conversation, as the engine takes them (newest last)."""
    exchanges = []
    for turn in ctx.repo.history(conversation_id):
        if turn.status not in HISTORY_STATUSES or not turn.reply_text:
            continue
        audio = str(ctx.repo.audio_path(turn.user_audio_path)) if turn.user_audio_path else None
        exchanges.append(Exchange(user_text=turn.user_text, user_audio=audio, assistant_text=turn.reply_text))
    limit = ctx.settings.limits.max_history_turns
    return exchanges[-limit:] if limit else []


class TurnJob:
    """One turn, generated by ``run_jobs`` in a worker thread.

    Args:
        ctx: the app context.
        checkpoint: which engine answers ("" or None: the default).
        conversation_id: the conversation the turn belongs to (earlier turns become history).
        turn_input: from ``prepare_input``.
        sampling: sampling settings.
        cancel: set it to stop generation (the turn is then stored as ``cancelled``).
        tag: names the job in ``run_jobs``' output (e.g. "A" / "B").
    """

    def __init__(
        self,
        ctx: AppContext,
        checkpoint: str | None,
        conversation_id: str,
        turn_input: TurnInput,
        sampling: SamplingConfig,
        cancel: threading.Event | None = None,
        tag: str = "",
    ) -> None:
        self.ctx = ctx
        self.engine = ctx.engine(checkpoint)
        self.checkpoint = self.engine.checkpoint_id
        self.conversation_id = conversation_id
        self.input = turn_input
        self.sampling = sampling
        self.cancel = cancel or threading.Event()
        self.tag = tag
        self.turn_id: str | None = None  # known once the running row is written

    def run(self, emit) -> TurnOutcome:
        """Generates the turn, calling ``emit(event)`` for every engine event; never raises."""
        mode = MODES[self.input.mode]
        outcome = TurnOutcome(None, "error", mode.name, self.checkpoint)
        try:
            request = ChatRequest(
                mode.name,
                text=self.input.text,
                audio=self.input.audio,
                history=history_for(self.ctx, self.conversation_id),
                sampling=self.sampling,
                max_text_chars=self.ctx.settings.limits.max_text_chars,
            )
            self.turn_id = outcome.turn_id = self.ctx.repo.start_turn(
                self.conversation_id,
                mode.name,
                mode.system_prompt,
                user_text=self.input.text,
                user_audio=self.input.audio_wav,
                checkpoint_id=self.checkpoint,
                sampling=self.sampling.to_dict(),
            )
            chunks: list[np.ndarray] = []
            done: Done | None = None
            for event in self.engine.stream(request, cancel=self.cancel):
                if isinstance(event, AudioChunk):
                    chunks.append(event.samples)
                elif isinstance(event, Done):
                    done = event
                emit(event)
            if done is None:  # the engine always ends with Done; guard against a silent stop
                raise RuntimeError("the engine stopped without a final event")
            self._store(outcome, done, chunks)
        except (UserError, AudioInputError, ValueError) as error:  # readable by design
            self._fail(outcome, str(error))
        except Exception as error:  # a bug or a broken checkpoint: keep serving, log the trace
            logger.exception("turn %s failed", self.turn_id)
            self._fail(outcome, f"Generation failed ({type(error).__name__}: {error}).")
        return outcome

    def _store(self, outcome: TurnOutcome, done: Done, chunks: list[np.ndarray]) -> None:
        audio = Waveform(np.concatenate(chunks), done.sample_rate) if chunks else None
        timings = done.timings
        stored_timings = None
        if timings is not None:
            stored_timings = {
                "time_to_first_text_ms": _ms(timings.time_to_first_text),
                "time_to_first_audio_ms": _ms(timings.time_to_first_audio),
                "real_time_factor": timings.real_time_factor,
                "audio_seconds": timings.audio_seconds if audio is not None else None,
            }
        status = "cancelled" if done.stop_reason == "cancelled" else "done"
        self.ctx.repo.finish_turn(
            self.turn_id,
            reply_text=done.reply_text,
            transcript=done.transcript or None,
            draft_text=done.draft or None,
            speech_tokens=done.speech_tokens if MODES[outcome.mode].speech_output else None,
            reply_audio=audio_to_wav_bytes(audio) if audio is not None else None,
            timings=stored_timings,
            status=status,
        )
        outcome.status = status
        outcome.reply_text, outcome.transcript, outcome.draft = done.reply_text, done.transcript, done.draft
        outcome.speech_tokens, outcome.timings, outcome.audio = list(done.speech_tokens), timings, audio

    def _fail(self, outcome: TurnOutcome, message: str) -> None:
        outcome.status, outcome.error = "error", message
        if self.turn_id is None:
            return
        try:
            self.ctx.repo.fail_turn(self.turn_id, message)
        except Exception:  # e.g. the database went away; the row stays "running" and is fixed at restart
            logger.exception("could not mark turn %s as failed", self.turn_id)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


_END = object()


def run_jobs(
    jobs: Sequence[TurnJob], poll_seconds: float = 1.0
) -> Iterator[list[tuple[str, Event | TurnOutcome]]]:
    """Runs jobs in worker threads and yields what they produce, in batches.

    Jobs on the same engine run one after the other (in the given order), so that each one's
    timings are its own; jobs on different engines run at the same time. Each batch is every
    ``(tag, event)`` that arrived since the previous one (at least one item); a job's last item is
    its ``TurnOutcome``. Closing the iterator early sets every unfinished job's cancel flag.
    """
    out: queue.Queue = queue.Queue()
    groups: dict[int, list[TurnJob]] = {}
    for job in jobs:
        groups.setdefault(id(job.engine), []).append(job)

    def work(group: list[TurnJob]) -> None:
        for job in group:
            outcome = job.run(lambda event, tag=job.tag: out.put((tag, event)))
            out.put((job.tag, outcome))
        out.put(_END)

    threads = [
        threading.Thread(target=work, args=(g,), daemon=True, name="drvoice-turn") for g in groups.values()
    ]
    for thread in threads:
        thread.start()
    running = len(threads)
    try:
        while running:
            try:
                items = [out.get(timeout=poll_seconds)]
            except queue.Empty:
                if not any(t.is_alive() for t in threads):
                    break  # cannot happen (work always ends with _END); never hang the page
                continue
            while True:
                try:
                    items.append(out.get_nowait())
                except queue.Empty:
                    break
            running -= sum(item is _END for item in items)
            batch = [item for item in items if item is not _END]
            if batch:
                yield batch
    finally:
        if running:
            for job in jobs:
                job.cancel.set()
