"""Typed data passed between the stages of DrVoice (audio, tokens, streaming events)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

# Phases of an assistant reply. Chain modes (STC/SAC/SUC) first write a text-only phase
# ("transcript" of the user's speech and/or a "draft" text response), then switch to the
# parallel text+speech "reply" at <|audio_bos|>. Text-only modes only have a "reply".
Phase = Literal["transcript", "draft", "reply"]
PHASES: tuple[str, ...] = ("transcript", "draft", "reply")


@dataclass(frozen=True)
class Waveform:
    """Mono float32 audio in [-1, 1]."""

    samples: np.ndarray  # (num_samples,) float32
    sample_rate: int  # Hz

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / float(self.sample_rate)


@dataclass(frozen=True)
class TextDelta:
    """New text of the reply (or of a chain-mode text phase)."""

    text: str
    phase: Phase


@dataclass(frozen=True)
class PhaseStart:
    """A new phase begins (chain modes: transcript -> draft -> reply)."""

    phase: Phase


@dataclass(frozen=True)
class AudioChunk:
    """A chunk of the streamed reply waveform."""

    samples: np.ndarray  # (num_samples,) float32
    sample_rate: int  # Hz
    index: int  # 0 for the first chunk of the reply


@dataclass(frozen=True)
class Timings:
    """Latency and speed figures of one reply (seconds unless stated)."""

    time_to_first_text: float | None  # request start -> first reply text delta
    time_to_first_audio: float | None  # request start -> first audio chunk
    total_time: float  # request start -> done
    audio_seconds: float  # duration of the generated waveform
    llm_steps: int  # LLM forward steps after the prompt (5 Hz steps in parallel phase)

    @property
    def real_time_factor(self) -> float | None:
        """Generation time / audio duration (lower is faster); None without audio."""
        if self.audio_seconds <= 0:
            return None
        return self.total_time / self.audio_seconds


@dataclass(frozen=True)
class Done:
    """Final event of a reply."""

    reply_text: str  # the parallel/text-only reply text
    transcript: str  # chain modes with a transcript phase, else ""
    draft: str  # chain modes with a draft text response, else ""
    speech_tokens: list[int] = field(default_factory=list)  # generated 25 Hz codes (no bos/eos/pad)
    sample_rate: int = 0  # of the audio chunks (0 when no audio)
    timings: Timings | None = None
    stop_reason: Literal["end", "max_steps", "cancelled"] = "end"


Event = TextDelta | PhaseStart | AudioChunk | Done
