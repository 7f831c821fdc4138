"""The residual log-mel decoder of the embedded units codec (`core.codec.units`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ResidualMelDecoder(nn.Module):
    """Refines a looked-up log-mel sequence: y = x + f(x), f a non-causal conv net.

    The output layer starts at zero, so an untrained decoder is exactly the lookup table.

    Args:
        n_mels: mel bands (80).
        channels: hidden width.
        blocks: residual conv blocks.
        kernel: conv kernel size in frames (odd).
        dilations: per block (empty: all 1).
    """

    def __init__(
        self, n_mels: int, channels: int, blocks: int, kernel: int, dilations: Sequence[int] = ()
    ) -> None:
        super().__init__()
        pad = kernel // 2
        dilations = tuple(dilations) or (1,) * blocks
        self.register_buffer("mel_mean", torch.zeros(n_mels))  # input normalisation, set by fit
        self.register_buffer("mel_std", torch.ones(n_mels))
        self.input = nn.Conv1d(n_mels, channels, kernel, padding=pad)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.GELU(), nn.Conv1d(channels, channels, kernel, padding=pad * d, dilation=d))
            for d in dilations
        )
        self.output = nn.Conv1d(channels, n_mels, kernel, padding=pad)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        """(B, F, n_mels) looked-up log-mel -> (B, F, n_mels) refined log-mel."""
        x = ((log_mel - self.mel_mean) / self.mel_std).transpose(1, 2)  # (B, n_mels, F)
        h = self.input(x)  # (B, C, F)
        for block in self.blocks:
            h = h + block(h)
        return log_mel + self.output(nn.functional.gelu(h)).transpose(1, 2) * self.mel_std
