"""Chunked streaming decode shared by detokenizers (units codec, CosyVoice).

A detokenizer only has to provide `decode_window(tokens) -> waveform` that turns any short token
sequence into exactly `len(tokens) * samples_per_token` samples. `ChunkedStreamDecoder` cuts the
token stream into chunks, decodes each chunk inside a window with left context and lookahead, keeps
the window's middle and crossfades neighbouring windows over `crossfade_samples` around each join.

Schedule (token indices; n = number of tokens received so far):

    chunk 0 covers tokens [0, b_0) with b_0 = first_chunk_tokens
    chunk i covers tokens [b_{i-1}, b_i) with b_i = b_{i-1} + h_i, h_1 = hop_tokens and
    h_{i+1} = min(max_hop_tokens, round(h_i * hop_growth)) (a constant hop with the defaults)
    chunk i is decoded from window [max(0, b_{i-1} - left_context_tokens), min(n, b_i + lookahead_tokens))
    and is emitted as soon as n >= b_i + lookahead_tokens (or at flush, with the window clipped at n).

So the first chunk (0.4 s of audio by default) is ready after `first_chunk_tokens +
lookahead_tokens` tokens, then one chunk per hop of new tokens. Every window re-decodes its context,
so a longer hop costs less per second of audio; growing hops (CosyVoice's stream_scale_factor) keep
the second chunk, which must arrive before the first has played, as early as a constant hop would,
and give the later ones, behind seconds of queued audio, the cheaper long windows. Joins sit in the
middle of the overlap of two windows, where both have `left_context_tokens`/`lookahead_tokens` of
context.
Which windows are decoded depends only on the token indices and on the total length n, never on
how the tokens were split into `push` calls, so `decode_chunked(tokens)` (push everything, then
flush) is sample-for-sample equal to any streamed decode of the same tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

logger = logging.getLogger(__name__)

DecodeWindow = Callable[..., np.ndarray]  # (W,) int64 tokens -> (W * samples_per_token,) float32
# With `exact_span`, the stream also passes exact=(a, b): only tokens [a, b) of the window are kept
# (the chunk and the one token on each side that the crossfade reaches); a decoder may spend less
# work on the rest, which is context.


@dataclass(frozen=True)
class ChunkSchedule:
    """When chunks are emitted and how they are joined."""

    first_chunk_tokens: int = 10  # tokens of the first chunk (0.4 s at 25 Hz): small = early audio
    hop_tokens: int = 25  # tokens of the second chunk (1 s at 25 Hz)
    left_context_tokens: int = 5  # already-emitted tokens re-decoded before each chunk
    lookahead_tokens: int = 5  # future tokens decoded after each chunk (delays it by as many tokens)
    crossfade_samples: int = 320  # raised-cosine crossfade centred on each join (0 = hard cut)
    hop_growth: float = 1.0  # each later chunk's hop is the previous one times this (1: constant)
    max_hop_tokens: int = 0  # the longest hop (0: no limit)

    def __post_init__(self) -> None:
        if self.first_chunk_tokens < 1 or self.hop_tokens < 1:
            raise ValueError(f"first_chunk_tokens and hop_tokens must be >= 1, got {self}")
        if self.left_context_tokens < 0 or self.lookahead_tokens < 0:
            raise ValueError("left_context_tokens and lookahead_tokens must be >= 0")
        if self.hop_growth < 1.0:
            raise ValueError(f"hop_growth must be >= 1, got {self.hop_growth}")
        if self.max_hop_tokens and self.max_hop_tokens < self.hop_tokens:
            raise ValueError(
                f"max_hop_tokens ({self.max_hop_tokens}) must be 0 or >= hop_tokens ({self.hop_tokens})"
            )
        if self.crossfade_samples < 0:
            raise ValueError(f"crossfade_samples must be >= 0, got {self.crossfade_samples}")
        if self.crossfade_samples > 0 and (self.left_context_tokens < 1 or self.lookahead_tokens < 1):
            raise ValueError("a crossfade needs left_context_tokens >= 1 and lookahead_tokens >= 1")

    def validate_for(self, samples_per_token: int) -> None:
        """Checks that a crossfade fits inside one token on each side of a join."""
        if self.crossfade_samples > samples_per_token:
            raise ValueError(
                f"crossfade_samples ({self.crossfade_samples}) must be <= samples_per_token "
                f"({samples_per_token})"
            )

    def next_hop(self, hop: int) -> int:
        """The hop of the chunk after one of `hop` tokens."""
        grown = max(hop, round(hop * self.hop_growth))
        return min(grown, self.max_hop_tokens) if self.max_hop_tokens else grown

    def to_dict(self) -> dict:
        return asdict(self)


def as_token_array(tokens: Sequence[int] | torch.Tensor | np.ndarray) -> np.ndarray:
    """Any 1-D token container -> (T,) int64 numpy array."""
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.detach().cpu().numpy()
    array = np.asarray(tokens)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1:
        raise ValueError(f"tokens must be one-dimensional, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"tokens must be integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


class ChunkedStreamDecoder:
    """A `DetokenizerStream` built on a window decoder.

    Args:
        decode_window: maps (W,) int64 tokens to (W * samples_per_token,) float32 audio.
        samples_per_token: audio samples per token (640 for 25 Hz at 16 kHz).
        schedule: chunking, context and crossfade settings.
        check_tokens: optional validator called on every pushed array (raises ValueError).
        exact_span: call `decode_window(tokens, exact=(a, b))` with the window's kept tokens.
    """

    def __init__(
        self,
        decode_window: DecodeWindow,
        samples_per_token: int,
        schedule: ChunkSchedule | None = None,
        check_tokens: Callable[[np.ndarray], None] | None = None,
        exact_span: bool = False,
    ) -> None:
        self.decode_window = decode_window
        self.exact_span = exact_span
        self.samples_per_token = samples_per_token
        self.schedule = schedule or ChunkSchedule()
        self.schedule.validate_for(samples_per_token)
        self.check_tokens = check_tokens
        self._tokens = np.zeros(0, dtype=np.int64)  # every token received so far
        self._chunk_start = 0  # first token of the next chunk
        self._chunk_end = self.schedule.first_chunk_tokens
        self._hop = self.schedule.hop_tokens  # of the latest chunk after the first
        self._tail: np.ndarray | None = None  # previous window's audio around the last join
        self._finished = False
        fade = self.schedule.crossfade_samples
        # Raised-cosine fade-in; fade-out = 1 - fade-in so coherent signals keep their level.
        self._fade_in = (0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / max(fade, 1))).astype(
            np.float32
        )

    @property
    def num_tokens(self) -> int:
        """Tokens received so far."""
        return len(self._tokens)

    def push(self, tokens: Sequence[int] | torch.Tensor | np.ndarray) -> list[np.ndarray]:
        """Adds tokens; returns the chunks whose lookahead is now available (maybe none).

        Args:
            tokens: (t,) new tokens (any length, including 0).

        Returns:
            float32 audio chunks, in order.
        """
        if self._finished:
            raise RuntimeError("push() after flush(): start a new stream")
        new = as_token_array(tokens)
        if self.check_tokens is not None:
            self.check_tokens(new)
        self._tokens = np.concatenate([self._tokens, new])
        chunks = []
        while self._chunk_end + self.schedule.lookahead_tokens <= self.num_tokens:
            chunks.append(self._emit(self._chunk_end))
        return chunks

    def flush(self) -> list[np.ndarray]:
        """Ends the stream: decodes the remaining tokens with whatever lookahead exists.

        Returns:
            float32 audio chunks, in order (the concatenation of everything returned by `push` and
            `flush` has exactly `num_tokens * samples_per_token` samples).
        """
        if self._finished:
            return []
        self._finished = True
        chunks = []
        # A held-back tail is never lost: with a crossfade, lookahead >= 1 guarantees a chunk
        # after it; without one the tail is empty.
        while self._chunk_start < self.num_tokens:
            chunks.append(self._emit(min(self._chunk_end, self.num_tokens)))
        self._tail = None
        return [c for c in chunks if len(c) > 0]

    def _emit(self, end: int) -> np.ndarray:
        """Decodes the chunk [chunk_start, end) and advances the schedule."""
        s, spt, n = self.schedule, self.samples_per_token, self.num_tokens
        start = self._chunk_start
        window_lo = max(0, start - s.left_context_tokens)
        window_hi = min(n, end + s.lookahead_tokens)
        window = self._tokens[window_lo:window_hi]
        if self.exact_span:  # the chunk and the token on each side that the crossfade reaches
            exact = (max(0, start - 1 - window_lo), min(window_hi, end + 1) - window_lo)
            audio = self.decode_window(window, exact=exact)
        else:
            audio = self.decode_window(window)
        audio = np.asarray(audio, dtype=np.float32)
        expected = (window_hi - window_lo) * spt
        if audio.shape != (expected,):
            raise ValueError(f"decode_window returned shape {audio.shape}, expected ({expected},)")
        offset = window_lo * spt  # absolute sample index of audio[0]
        fade_left = s.crossfade_samples // 2  # crossfade half before a join
        fade_right = s.crossfade_samples - fade_left  # and after it

        pieces = []
        out_start = start * spt
        if self._tail is not None:  # crossfade the previous window into this one around the join
            head = audio[out_start - fade_left - offset : out_start + fade_right - offset]
            pieces.append(self._tail * (1.0 - self._fade_in) + head * self._fade_in)
            out_start += fade_right
        if end >= n and self._finished:  # last chunk of the stream: keep everything
            out_end, self._tail = n * spt, None
        else:
            out_end = end * spt - fade_left
            self._tail = audio[out_end - offset : end * spt + fade_right - offset].copy()
        pieces.append(audio[out_start - offset : out_end - offset])
        if start > 0:  # the first chunk has its own length, the second hop_tokens, later ones grow
            self._hop = s.next_hop(self._hop)
        self._chunk_start, self._chunk_end = end, end + self._hop
        logger.debug("chunk tokens [%d, %d) from window [%d, %d)", start, end, window_lo, window_hi)
        return np.concatenate(pieces).astype(np.float32, copy=False)


def decode_chunked(
    decode_window: DecodeWindow,
    tokens: Sequence[int] | torch.Tensor | np.ndarray,
    samples_per_token: int,
    schedule: ChunkSchedule | None = None,
    exact_span: bool = False,
) -> np.ndarray:
    """Offline decode with exactly the windows a stream would use (equal to any streamed decode).

    Args:
        decode_window: see `ChunkedStreamDecoder`.
        tokens: (T,) tokens.
        samples_per_token: audio samples per token.
        schedule: chunking settings.
        exact_span: see `ChunkedStreamDecoder`.

    Returns:
        (T * samples_per_token,) float32 waveform.
    """
    stream = ChunkedStreamDecoder(decode_window, samples_per_token, schedule, exact_span=exact_span)
    chunks = stream.push(tokens) + stream.flush()
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
