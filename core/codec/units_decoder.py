"""The residual log-mel decoder of the embedded units codec (`core.codec.units`) and its training."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)


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


def train_residual_decoder(
    decoder: ResidualMelDecoder,
    unit_log_mel: torch.Tensor,
    units: list[torch.Tensor],
    targets: list[torch.Tensor],
    steps: int,
    *,
    frames_per_unit: int,
    batch_size: int = 8,
    crop_units: int = 64,
    lr: float = 1e-3,
    val_fraction: float = 0.05,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Trains `decoder` in place with L1 on log-mel; see `UnitsCodec.train_decoder` (its caller).

    Args:
        decoder: the decoder to train (its input normalisation is set from `targets`).
        unit_log_mel: (K, frames_per_unit * n_mels) the codec's lookup table.
        units, targets, steps, batch_size, crop_units, lr, val_fraction, seed, progress: as in
            `UnitsCodec.train_decoder`.
        frames_per_unit: log-mel frames per unit (4).

    Returns:
        the training L1 loss of every step.
    """
    from tqdm.auto import tqdm

    fpu, n_mels = frames_per_unit, decoder.mel_mean.shape[0]
    all_units = torch.cat(units)  # (T,) one long stream; utterances start and end in silence
    target = torch.cat(targets)  # (4T, n_mels)
    decoder.mel_mean.copy_(target.mean(0))
    decoder.mel_std.copy_(target.std(0).clamp_min(1e-3))
    crop_units = min(crop_units, len(all_units))
    num_val = int(len(all_units) * val_fraction)
    num_val = num_val if num_val >= crop_units and len(all_units) - num_val >= crop_units else 0
    num_train = len(all_units) - num_val
    val_input = unit_log_mel[all_units[num_train:]].reshape(1, -1, n_mels)  # (1, 4 T_val, n_mels)
    val_target = target[None, num_train * fpu :]

    def val_l1() -> float:
        decoder.eval()
        with torch.no_grad():
            loss = nn.functional.l1_loss(decoder(val_input), val_target).item()
        decoder.train()
        return loss

    best_l1 = val_l1() if num_val else math.inf
    best_state = {k: v.clone() for k, v in decoder.state_dict().items()}
    eval_every = max(1, steps // 20)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1)))
    )
    decoder.train()
    losses = []
    for step in tqdm(range(1, steps + 1), desc="residual decoder", disable=not progress):
        starts = torch.randint(num_train - crop_units + 1, (batch_size,), generator=generator)
        index = starts[:, None] + torch.arange(crop_units)  # (B, crop_units)
        frames = (index[:, :, None] * fpu + torch.arange(fpu)).reshape(batch_size, -1)  # (B, 4 crop)
        looked_up = unit_log_mel[all_units[index]].reshape(batch_size, -1, n_mels)
        loss = nn.functional.l1_loss(decoder(looked_up), target[frames])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if num_val and (step % eval_every == 0 or step == steps):
            current = val_l1()
            logger.debug("step %d: train L1 %.4f, held-out L1 %.4f", step, losses[-1], current)
            if current < best_l1:
                best_l1, best_state = (
                    current,
                    {k: v.clone() for k, v in decoder.state_dict().items()},
                )
    if num_val:
        decoder.load_state_dict(best_state)
    decoder.eval()
    if losses:
        logger.info(
            "residual decoder: train L1 %.4f -> %.4f in %d steps, best held-out L1 %.4f",
            losses[0], losses[-1], steps, best_l1,
        )  # fmt: skip
    return losses
