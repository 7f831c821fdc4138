"""Builds the codec a checkpoint names in its config ("codec": {"type": ..., ...})."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

CODEC_TYPES = ("units", "s3+cosyvoice2", "none")


def load_codec(spec: dict[str, Any] | None, checkpoint_dir: Path, device: torch.device | str | None = None):
    """Returns the detokenizer (and tokenizer) object of a checkpoint, or None for text-only models.

    Args:
        spec: the "codec" entry of the model config, e.g. {"type": "units", "path": "codec"} or
            {"type": "s3+cosyvoice2", ...} (see `core.codec.s3_cosyvoice2`).
        checkpoint_dir: directory relative codec paths are resolved against.
        device: where a neural codec runs (the units codec always runs on the CPU).
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
    if kind == "s3+cosyvoice2":
        from core.codec.s3_cosyvoice2 import S3CosyVoice2Codec

        return S3CosyVoice2Codec.from_spec(spec, Path(checkpoint_dir), device=device)
    raise ValueError(f"unknown codec type {kind!r}; expected one of {', '.join(CODEC_TYPES)}")
