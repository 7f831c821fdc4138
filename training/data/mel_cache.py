"""A disk cache of user-speech log-mels, so training never recomputes the encoder's front end.

One safetensors file per (audio file, n_mels), named by a hash of the file's absolute path, its
modification time and size, and n_mels: editing or replacing a recording is a miss, never a stale
hit. Files are written atomically (temp file + rename), so several processes (DataLoader workers,
the tokenize step) may share one cache folder.

    cache = MelCache("data/mels", n_mels=80)
    mel = cache.get("data/wav/qa-0001.user.wav")   # (80, frames) float32, computed once
    cache.frames("data/wav/qa-0001.user.wav")      # frame count, without loading the tensor
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

MAX_AUDIO_SECONDS = 3600.0  # far above the 2K-position budget (~6.8 min); longer files are errors
MAX_AUDIO_BYTES = 2**31  # 2 GiB


def load_user_mels(path: str | os.PathLike, n_mels: int) -> torch.Tensor:
    """Log-mel of a user recording exactly as the engine computes it (16 kHz, Whisper front end).

    Training data may hold quiet or very short clips, so the app's silence and length checks are off.

    Returns:
        (n_mels, frames) float32, 100 frames per second.
    """
    from core.audio import load_audio
    from core.encoder import SAMPLE_RATE, log_mel

    waveform = load_audio(
        Path(path),
        target_rate=SAMPLE_RATE,
        max_seconds=MAX_AUDIO_SECONDS,
        max_bytes=MAX_AUDIO_BYTES,
        min_seconds=0.0,
        silence_threshold_dbfs=None,
    )
    return log_mel(waveform, n_mels).float().contiguous()


class MelCache:
    """Log-mels of user recordings, computed on the first request and read back afterwards.

    Args:
        directory: cache folder (created on demand); None keeps the features in memory only.
        n_mels: mel bins (80 for tiny/demo encoders, 128 for Whisper large-v3).

    Calling the cache (`cache(path)`) is `cache.get(path)`, so it can be passed wherever a
    `path -> mels` function is expected (`training.data.com_mixing.expand`).
    """

    def __init__(self, directory: str | os.PathLike | None, n_mels: int):
        if n_mels <= 0:
            raise ValueError(f"n_mels must be positive, got {n_mels}")
        self.directory = Path(directory) if directory is not None else None
        self.n_mels = n_mels
        self.hits = 0  # features read back from the cache
        self.misses = 0  # features computed from audio
        self._memory: dict[str, torch.Tensor] = {}  # directory None: key -> mels
        self._frames: dict[str, int] = {}  # key -> frame count (shape look-ups stay cheap)

    def key(self, path: str | os.PathLike) -> str:
        """Hash of the file's absolute path, mtime, size and n_mels (hex, 40 chars)."""
        path = Path(path).resolve()
        stat = path.stat()  # FileNotFoundError names the path
        ident = f"{path}\0{stat.st_mtime_ns}\0{stat.st_size}\0{self.n_mels}"
        return hashlib.sha1(ident.encode("utf-8")).hexdigest()

    def file_for(self, key: str) -> Path:
        if self.directory is None:
            raise ValueError("an in-memory MelCache has no files")
        return self.directory / key[:2] / f"{key}.safetensors"

    def contains(self, path: str | os.PathLike) -> bool:
        """Whether the features of `path` (as it is now) are cached."""
        key = self.key(path)
        return key in self._memory if self.directory is None else self.file_for(key).is_file()

    def get(self, path: str | os.PathLike) -> torch.Tensor:
        """Returns the (n_mels, frames) float32 log-mel of a recording, computing it on a miss."""
        from safetensors.torch import load_file, save_file

        key = self.key(path)
        if self.directory is None:
            if key in self._memory:
                self.hits += 1
                return self._memory[key]
        else:
            file = self.file_for(key)
            if file.is_file():
                self.hits += 1
                mels = load_file(str(file))["mels"]
                self._frames[key] = int(mels.shape[-1])
                return mels
        self.misses += 1
        mels = load_user_mels(path, self.n_mels)
        self._frames[key] = int(mels.shape[-1])
        if self.directory is None:
            self._memory[key] = mels
        else:
            file.parent.mkdir(parents=True, exist_ok=True)
            tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
            save_file({"mels": mels}, str(tmp), metadata={"source": str(Path(path).resolve())})
            os.replace(tmp, file)
        return mels

    __call__ = get

    def frames(self, path: str | os.PathLike) -> int:
        """Number of mel frames of a recording (from the cached file's header; computed on a miss)."""
        from safetensors import safe_open

        key = self.key(path)
        if key in self._frames:
            return self._frames[key]
        if self.directory is not None and self.file_for(key).is_file():
            with safe_open(str(self.file_for(key)), framework="pt") as handle:
                self._frames[key] = int(handle.get_slice("mels").get_shape()[-1])
            return self._frames[key]
        return int(self.get(path).shape[-1])

    def shape_only(self, path: str | os.PathLike) -> torch.Tensor:
        """A zero-memory (n_mels, frames) stand-in: enough to lay out a sequence and measure it."""
        return torch.zeros(()).expand(self.n_mels, self.frames(path))
