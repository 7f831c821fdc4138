"""Builds the codec a checkpoint names in its config ("codec": {"type": ..., ...})."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CODEC_TYPES = ("units", "none")


def load_codec(spec: dict[str, Any] | None, checkpoint_dir: Path):
    """Returns the detokenizer (and tokenizer) object of a checkpoint, or None for text-only models.

    Args:
        spec: the "codec" entry of the model config, e.g. {"type": "units", "path": "codec"}.
        checkpoint_dir: directory the relative codec path is resolved against.
    """
    kind = (spec or {"type": "none"}).get("type", "none")
    if kind == "none":
        return None
    if kind == "units":
        from core.codec.units import UnitsCodec

        path = Path(checkpoint_dir) / spec.get("path", "codec")
        if not path.is_dir():
            raise FileNotFoundError(f"the checkpoint's units codec directory is missing: {path}")
        return UnitsCodec.load(path)
    raise ValueError(f"unknown codec type {kind!r}; expected one of {', '.join(CODEC_TYPES)}")
