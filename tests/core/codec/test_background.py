"""core/codec/background.py: the same chunks as the wrapped stream, decoded on a worker thread."""

import time

import numpy as np
import pytest

from core.codec.background import BackgroundStream
from core.codec.streaming import ChunkedStreamDecoder, ChunkSchedule

SPT = 40
SCHEDULE = ChunkSchedule(
    first_chunk_tokens=4, hop_tokens=5, left_context_tokens=2, lookahead_tokens=2, crossfade_samples=20
)


def _decode(tokens: np.ndarray) -> np.ndarray:
    time.sleep(0.002)  # decoding takes time: chunks finish while the caller goes on
    return np.sin(0.01 * (tokens[:, None] * SPT + np.arange(SPT))).reshape(-1).astype(np.float32)


def _check(tokens: np.ndarray) -> None:
    if len(tokens) and tokens.max() >= 1000:
        raise ValueError("speech tokens must be in [0, 1000)")


def _stream():
    return ChunkedStreamDecoder(_decode, SPT, SCHEDULE, check_tokens=_check)


def test_same_chunks_as_the_wrapped_stream():
    plain = _stream()
    expected = [c for t in range(37) for c in plain.push([t])] + plain.flush()
    background = BackgroundStream(_stream())
    got = []
    for t in range(37):
        got += background.push([t])
    got += background.flush()
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    assert background.flush() == [] and background.ready() == []
    with pytest.raises(RuntimeError, match="after flush"):
        background.push([1])


def test_wait_returns_a_due_chunk_at_once():
    background = BackgroundStream(_stream())
    assert background.push([0, 1, 2, 3, 4], wait=True) == []  # the first chunk needs 4 + 2 tokens
    chunks = background.push([5], wait=True)
    assert [len(c) for c in chunks] == [4 * SPT - SCHEDULE.crossfade_samples // 2]
    background.close()


def test_worker_errors_reach_the_caller():
    background = BackgroundStream(_stream())
    background.push([1, 2, 3])
    background.push([5000])  # invalid: raised on the worker, re-raised here
    with pytest.raises(ValueError, match=r"in \[0, 1000\)"):
        background.flush()


def test_tokens_are_checked_at_once():
    background = BackgroundStream(_stream())
    with pytest.raises(ValueError, match="integers"):
        background.push([1.5])
    background.close()


def test_close_stops_the_worker():
    background = BackgroundStream(_stream())
    for t in range(30):
        background.push([t])
    background.close()
    background._thread.join(timeout=2)
    assert not background._thread.is_alive()
