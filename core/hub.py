"""Pretrained files from local paths or the Hugging Face hub (through huggingface_hub's cache).

Every loader of real weights (S3Tokenizer, CosyVoice2, Whisper, Qwen2.5) resolves its files here:

- a local file or directory is used as it is;
- a hub id ("owner/name") is fetched with `huggingface_hub` into its cache (`HF_HUB_CACHE`,
  default ~/.cache/huggingface/hub) and read from there on later calls;
- with `HF_HUB_OFFLINE=1` only the cache is consulted, and a file that is not there raises
  `MissingFilesError` naming every missing file and the command that fetches them.

Weights are read only as safetensors, ONNX (protobuf) or `torch.load(weights_only=True)`: a
`.pt` file whose unpickling needs arbitrary Python classes is refused (`UnsafeWeightsError`).
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

_TRUE = ("1", "true", "yes", "on")


class MissingFilesError(FileNotFoundError):
    """Files that are neither on disk nor in the hub cache (and could not be downloaded)."""


class UnsafeWeightsError(RuntimeError):
    """A pickle-based weights file that needs arbitrary Python objects to load was refused."""


def hub_offline() -> bool:
    """True when `HF_HUB_OFFLINE` is set (read at call time, unlike huggingface_hub's constant)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in _TRUE


def _cache_dir(cache_dir: str | Path | None) -> str | None:
    if cache_dir is not None:
        return str(cache_dir)
    return os.environ.get("HF_HUB_CACHE") or None  # None: huggingface_hub's default


def is_repo_id(text: str | Path) -> bool:
    """'owner/name' that is not an existing local path."""
    text = str(text)
    if Path(text).expanduser().exists() or text.startswith((".", "/", "~")):
        return False
    parts = text.split("/")
    return len(parts) == 2 and all(parts)


def _missing_message(repo_id: str, names: Sequence[str], why: str) -> str:
    listed = ", ".join(names)
    fetch = " ".join(f"--include {n}" for n in names)
    return (
        f"{repo_id}: missing {listed} ({why}). Fetch them where the hub is reachable "
        f"(`hf download {repo_id} {fetch}`) into the Hugging Face cache, or download the files and pass "
        "their local directory instead of the hub id."
    )


def fetch_files(
    repo_id: str,
    filenames: Sequence[str],
    *,
    optional: Sequence[str] = (),
    revision: str | None = None,
    cache_dir: str | Path | None = None,
) -> dict[str, Path]:
    """Local paths of files of a hub repo (downloaded into the cache when online).

    Args:
        repo_id: "owner/name".
        filenames: files that must exist.
        optional: files to fetch when they exist (absent from the result otherwise).
        revision: branch, tag or commit.
        cache_dir: hub cache (default `$HF_HUB_CACHE` or huggingface_hub's default).

    Returns:
        {filename: path} for every required and every found optional file.

    Raises:
        MissingFilesError: naming every required file that could not be had.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    offline = hub_offline()
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in [*filenames, *[n for n in optional if n not in filenames]]:
        try:
            path = hf_hub_download(
                repo_id, name, revision=revision, cache_dir=_cache_dir(cache_dir), local_files_only=offline
            )
            found[name] = Path(path)
        except (LocalEntryNotFoundError, EntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
            logger.debug("%s/%s: %s", repo_id, name, exc)
            if name not in optional:
                missing.append(name)
    if missing:
        why = (
            "HF_HUB_OFFLINE is set and they are not in the local cache"
            if offline
            else "the hub could not serve them"
        )
        raise MissingFilesError(_missing_message(repo_id, missing, why))
    return found


def resolve_directory(
    path_or_id: str | Path,
    *,
    required: Sequence[str] = (),
    allow_patterns: Sequence[str] | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """A local directory, or a hub repo snapshot (only `allow_patterns` files) in the cache.

    Args:
        path_or_id: directory or "owner/name".
        required: files that must be in it (checked for local directories too).
        allow_patterns: glob patterns of the files to fetch from the hub (None: all).

    Raises:
        MissingFilesError: the directory or repo lacks required files (each is named).
    """
    local = Path(path_or_id).expanduser()
    if local.is_dir():
        missing = [name for name in required if not (local / name).exists()]
        if missing:
            raise MissingFilesError(f"{local}: missing {', '.join(missing)}")
        return local
    if not is_repo_id(path_or_id):
        raise MissingFilesError(f"{path_or_id}: no such directory (and not a hub id 'owner/name')")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo_id = str(path_or_id)
    offline = hub_offline()
    try:
        directory = Path(
            snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=list(allow_patterns) if allow_patterns else None,
                cache_dir=_cache_dir(cache_dir),
                local_files_only=offline,
            )
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        why = (
            "HF_HUB_OFFLINE is set and the repo is not in the local cache"
            if offline
            else "the hub could not be reached"
        )
        names = list(required) or list(allow_patterns or ["*"])
        raise MissingFilesError(_missing_message(repo_id, names, f"{why}; {exc.__class__.__name__}")) from exc
    missing = [name for name in required if not (directory / name).exists()]
    if missing:
        raise MissingFilesError(_missing_message(repo_id, missing, "not in the fetched snapshot"))
    return directory


def resolve_file(
    source: str | Path,
    default_name: str,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """One weights file: a local file, `default_name` inside a local directory, or inside a hub repo.

    Raises:
        MissingFilesError: naming the missing file.
    """
    local = Path(source).expanduser()
    if local.is_file():
        return local
    if local.is_dir():
        path = local / default_name
        if not path.is_file():
            raise MissingFilesError(f"{local}: missing {default_name}")
        return path
    if is_repo_id(source):
        return fetch_files(str(source), [default_name], revision=revision, cache_dir=cache_dir)[default_name]
    raise MissingFilesError(
        f"{source}: no such file (expected {default_name}, a directory holding it, or a hub id)"
    )


def safe_torch_load(path: str | Path, what: str = "weights"):
    """`torch.load(path, weights_only=True)` on the CPU with clear errors.

    Raises:
        MissingFilesError: the file does not exist (the message names it).
        UnsafeWeightsError: unpickling it would need arbitrary Python objects.
        ValueError: it is not a readable torch file.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFilesError(f"{what}: {path} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise UnsafeWeightsError(
            f"{what}: {path} was refused: unpickling it needs arbitrary Python objects, which can run code "
            f"when loaded (only tensors are accepted; torch.load(weights_only=True) said: {first})"
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"{what}: {path} is not a readable torch file: {exc}") from exc


def load_torch_weights(path: str | Path, what: str = "weights") -> dict[str, torch.Tensor]:
    """A flat {name: tensor} dict from a safetensors file or a `.pt` read with `weights_only=True`.

    Args:
        path: the file.
        what: how the file is named in errors ("CosyVoice2 flow.pt").

    Raises:
        MissingFilesError, UnsafeWeightsError: see `safe_torch_load`.
        ValueError: it is not a flat dict of tensors.
    """
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        from safetensors.torch import load_file

        return load_file(str(path))
    data = safe_torch_load(path, what)
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"{what}: {path} does not hold a flat {{name: tensor}} state dict")
    return data
