"""Audio files on disk, named by the sha256 of their content.

A file lives at ``<data_dir>/audio/<first 2 hex digits>/<sha256><suffix>``; the database keeps the
path relative to the data dir (``audio/3f/3f9c...e1.wav``), so the whole data folder can be moved.
Identical content is stored once. Writes go to a temporary file in the same folder and are then
renamed into place, so a reader (or a crash) never sees half a file and two writers of the same
content cannot collide.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

AUDIO_SUBDIR = "audio"  # under the data dir

# Leading bytes of the containers the app may receive or write -> file suffix.
_MAGIC_SUFFIXES: tuple[tuple[bytes, str], ...] = (
    (b"RIFF", ".wav"),
    (b"fLaC", ".flac"),
    (b"OggS", ".ogg"),
    (b"ID3", ".mp3"),
    (b"\xff\xfb", ".mp3"),
    (b"\x1a\x45\xdf\xa3", ".webm"),
)


def guess_suffix(data: bytes) -> str:
    """File suffix from the container's magic bytes (``.bin`` when unknown)."""
    for magic, suffix in _MAGIC_SUFFIXES:
        if data.startswith(magic):
            return suffix
    return ".bin"


class AudioStore:
    """Content-addressed audio files under ``data_dir``.

    Args:
        data_dir: the app's data folder (created if missing).
    """

    def __init__(self, data_dir: str | os.PathLike) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.root = self.data_dir / AUDIO_SUBDIR
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, audio: bytes | str | os.PathLike, suffix: str | None = None) -> str:
        """Store audio bytes or a copy of an audio file.

        Args:
            audio: the encoded file content, or the path of a file to copy.
            suffix: file suffix such as ``".wav"``; default: the path's suffix, else guessed from
                the content.

        Returns:
            The path relative to the data dir (POSIX separators), e.g. ``audio/3f/3f9c....wav``.
        """
        if isinstance(audio, (bytes, bytearray, memoryview)):
            data = bytes(audio)
        else:
            source = Path(audio)
            data = source.read_bytes()
            suffix = suffix or source.suffix.lower() or None
        suffix = suffix or guess_suffix(data)
        if not suffix.startswith(".") or "/" in suffix or "\\" in suffix:
            raise ValueError(f"bad audio suffix {suffix!r}")
        digest = hashlib.sha256(data).hexdigest()
        relative = f"{AUDIO_SUBDIR}/{digest[:2]}/{digest}{suffix}"
        target = self.data_dir / relative
        if target.exists():
            return relative  # same content already stored
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return relative

    def path(self, relative: str) -> Path:
        """Absolute path of a stored file; refuses paths that leave the data dir."""
        resolved = (self.data_dir / relative).resolve()
        if not resolved.is_relative_to(self.root):
            raise ValueError(f"audio path {relative!r} is outside {self.root}")
        return resolved

    def read(self, relative: str) -> bytes:
        """The content of a stored file."""
        return self.path(relative).read_bytes()

    def delete(self, relative: str) -> bool:
        """Remove a stored file (the caller checks that no row refers to it). True if removed."""
        target = self.path(relative)
        if not target.exists():
            return False
        target.unlink()
        return True

    def files(self) -> list[str]:
        """Relative paths of all stored files (for admin and garbage collection)."""
        return sorted(
            p.relative_to(self.data_dir).as_posix()
            for p in self.root.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )
