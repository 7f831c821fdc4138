"""Content-addressed audio files: naming, deduplication, containment."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from storage.audio_store import AudioStore, guess_suffix


def test_identical_content_is_stored_once(tmp_path: Path, wav) -> None:
    store = AudioStore(tmp_path / "data")
    data = wav()
    first, second = store.put(data), store.put(bytearray(data))
    digest = hashlib.sha256(data).hexdigest()
    assert first == second == f"audio/{digest[:2]}/{digest}.wav"
    assert store.files() == [first]
    assert store.read(first) == data
    assert store.path(first) == (tmp_path / "data" / first).resolve()

    other = store.put(wav(frequency=880))
    assert other != first and len(store.files()) == 2


def test_copy_from_file_and_suffixes(tmp_path: Path, wav) -> None:
    store = AudioStore(tmp_path / "data")
    source = tmp_path / "in.WAV"
    source.write_bytes(wav())
    assert store.put(source).endswith(".wav")
    assert store.put(source) == store.put(wav())  # same content, same file
    assert store.put(b"fLaC....", suffix=".flac").endswith(".flac")
    assert guess_suffix(b"OggS....") == ".ogg" and guess_suffix(b"\x00\x01") == ".bin"
    with pytest.raises(ValueError, match="suffix"):
        store.put(b"x", suffix="../x")


def test_paths_outside_the_store_are_refused(tmp_path: Path) -> None:
    store = AudioStore(tmp_path / "data")
    (tmp_path / "secret.txt").write_text("no")
    for bad in ("../secret.txt", "audio/../../secret.txt", "/etc/passwd"):
        with pytest.raises(ValueError, match="outside"):
            store.read(bad)


def test_delete(tmp_path: Path) -> None:
    store = AudioStore(tmp_path / "data")
    path = store.put(b"RIFF1234")
    assert store.delete(path) is True
    assert store.delete(path) is False
    assert store.files() == []
