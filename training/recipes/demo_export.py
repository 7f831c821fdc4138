"""The demo pipeline's last stage: the trained checkpoint in bf16, the model card and its log kept."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def export(source: Path, out: Path) -> Path:
    """Copies the final checkpoint to `out` with bf16 weights (the embedded default must stay small);
    the model card, its experiment log and figures (*.md, *.png) already in `out` are kept, and so
    are its recommended decoding settings (generation_config.json), which evaluation chose."""
    from core.checkpoint import GENERATION_FILE, from_pretrained, save_pretrained

    ckpt = from_pretrained(source)
    files = [*out.glob("*.md"), *out.glob("*.png"), out / GENERATION_FILE]
    kept = {p.name: p.read_bytes() for p in files if p.is_file()}
    if out.exists():
        shutil.rmtree(out)
    save_pretrained(out, ckpt.model.to(torch.bfloat16), ckpt.tokenizer, codec=ckpt.codec, extra=ckpt.extra)
    for name, data in kept.items():  # the model card, its log, its figures and decoding settings
        (out / name).write_bytes(data)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    log.info("exported %s (%.1f MB)", out, size / 2**20)
    return out
