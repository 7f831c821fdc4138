"""Tiny random CosyVoice2 weights written as the official flow.pt / hift.pt (shared by the codec tests)."""

from __future__ import annotations

from pathlib import Path

import torch

from core.codec.cosyvoice_modules import CosyVoice2Config, build_flow, build_hift


def randomise(*modules: torch.nn.Module) -> None:
    """Random weights everywhere (several official initialisations are zeros or constants)."""
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.05)


def write_tiny_weights(directory: Path, config: CosyVoice2Config, seed: int = 0) -> Path:
    """flow.pt and hift.pt (plain state dicts saved with torch.save, as CosyVoice ships them)."""
    torch.manual_seed(seed)
    flow, hift = build_flow(config), build_hift(config)
    randomise(flow, hift)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(flow.state_dict(), directory / "flow.pt")
    torch.save(hift.state_dict(), directory / "hift.pt")
    return directory
