"""A detokenizer stream decoded on a worker thread, so that audio decoding overlaps generation.

Generation (one LLM step and k SRH steps at a time) and waveform decoding (the units codec's
residual decoder and Griffin-Lim, or CosyVoice's flow and vocoder) take turns on one thread
otherwise. `BackgroundStream` hands the tokens to a worker that owns the wrapped stream; the
generating thread collects finished chunks between steps without waiting. The chunks, their order
and their samples are exactly those of the wrapped stream: only when they become available changes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence

import numpy as np

from core.codec.streaming import as_token_array

_FLUSH = object()
_CLOSE = object()
_END = object()


class BackgroundStream:
    """Wraps a `push(tokens) -> chunks` / `flush() -> chunks` stream; see the module docstring.

    Args:
        stream: the detokenizer stream (e.g. `UnitsCodec.stream()`); used by the worker only.
        name: the worker thread's name.
    """

    def __init__(self, stream, name: str = "detokenizer"):
        self._stream = stream
        self._inbox: queue.Queue = queue.Queue()
        self._outbox: queue.Queue = queue.Queue()
        self._ended = False
        self._pending = 0  # pushes whose output has not been collected yet
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._inbox.get()
            if item is _CLOSE or self._closed.is_set():
                return
            try:
                if item is _FLUSH:
                    self._outbox.put(self._stream.flush())
                    self._outbox.put(_END)
                    return
                self._outbox.put(self._stream.push(item))
            except BaseException as error:  # handed to the generating thread, raised there
                self._outbox.put(error)
                return

    def _collect(self, until_end: bool = False, until_pushed: bool = False) -> list[np.ndarray]:
        chunks: list[np.ndarray] = []
        while not self._ended:
            block = until_end or (until_pushed and self._pending > 0)
            try:
                item = self._outbox.get(block=block)
            except queue.Empty:
                break
            if item is _END:
                self._ended = True
            elif isinstance(item, BaseException):
                self._ended = True
                raise item
            else:
                self._pending -= 1
                chunks.extend(item)
        return chunks

    def push(self, tokens: Sequence[int] | np.ndarray, wait: bool = False) -> list[np.ndarray]:
        """Queues tokens for decoding; returns the chunks finished so far.

        Args:
            tokens: (t,) new tokens.
            wait: wait until everything pushed so far is decoded (the engine waits for the first
                chunk, so that first audio is not slowed by generation running beside it).
        """
        if self._ended:
            raise RuntimeError("push() after flush() or close(): start a new stream")
        self._inbox.put(as_token_array(tokens).copy())  # validated here; the caller may reuse its buffer
        self._pending += 1
        return self._collect(until_pushed=wait)

    def ready(self) -> list[np.ndarray]:
        """The chunks finished since the last call (never waits)."""
        return self._collect()

    def flush(self) -> list[np.ndarray]:
        """Ends the stream: waits for every queued token to be decoded; returns the remaining chunks."""
        if self._ended:
            return []
        self._inbox.put(_FLUSH)
        return self._collect(until_end=True)

    def close(self) -> None:
        """Stops the worker without decoding what is still queued (a cancelled reply)."""
        self._closed.set()
        if not self._ended:
            self._ended = True
            self._inbox.put(_CLOSE)
