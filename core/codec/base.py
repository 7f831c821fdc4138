"""Protocols every speech codec implements.

A codec has two halves: a `SpeechTokenizer` that turns audio into discrete speech tokens at the
token rate (25 Hz for S3Tokenizer v2 and the embedded units codec) and a `SpeechDetokenizer` that
turns tokens back into audio, offline (`decode`) or streaming (`stream()`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from core.types import Waveform


@runtime_checkable
class SpeechTokenizer(Protocol):
    codebook_size: int  # N: codes are 0..N-1
    token_rate: float  # tokens per second (25.0)

    def encode(self, waveform: Waveform) -> torch.Tensor:
        """Returns a LongTensor (T,) of codes in [0, codebook_size)."""
        ...


@runtime_checkable
class DetokenizerStream(Protocol):
    def push(self, tokens: Sequence[int]) -> list[np.ndarray]:
        """Adds new tokens; returns the audio chunks (float32) that became ready (maybe none)."""
        ...

    def flush(self) -> list[np.ndarray]:
        """Ends the stream; returns the remaining audio."""
        ...


@runtime_checkable
class SpeechDetokenizer(Protocol):
    sample_rate: int  # of the produced audio
    token_rate: float  # tokens per second expected

    def decode(self, tokens: Sequence[int] | torch.Tensor) -> np.ndarray:
        """Offline decode of a whole token sequence to a float32 waveform."""
        ...

    def stream(self) -> DetokenizerStream:
        """A fresh streaming decoder (first chunk early, then fixed hops, seamless joins)."""
        ...
