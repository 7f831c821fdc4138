"""Deterministic views of a log-mel: the same speech a little faster or slower, a little higher or lower.

    retime(mel, 1.1)          # 10% faster: the time axis resampled to F / 1.1 frames
    warp_mel(mel, 0.94)       # bin i reads bin 0.94 i: formants move up, like a shorter vocal tract
    mel_view(mel, *VIEWS[3])  # one of the fixed test-time views

Training perturbs user speech with random draws of these two (`training.data.augment`: tempo
0.85-1.15, warp 0.88-1.12). At inference the generator can hear one question in several of the
fixed `VIEWS` and choose each text token from the mean of their log-probabilities
(`SamplingConfig.audio_views`): a test-time ensemble over the encoder's view of a voice it has not
heard. On the demo's test split (640 spoken questions, S2T) 3 views answered 434 against 422 with
one (McNemar p = 0.012), most of it on held-out voices and phrasings; 5 views 433, 9 views 436
(checkpoints/demo/EXPERIMENTS.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# (tempo, warp) pairs, in the order `SamplingConfig.audio_views` takes them: the plain view first,
# then one change at a time, then both. Within the ranges training draws from.
VIEWS: tuple[tuple[float, float], ...] = (
    (1.0, 1.0),
    (0.9, 1.0),
    (1.1, 1.0),
    (1.0, 0.94),
    (1.0, 1.06),
    (0.9, 0.94),
    (1.1, 1.06),
    (1.1, 0.94),
    (0.9, 1.06),
)


def retime(mel: torch.Tensor, rate: float) -> torch.Tensor:
    """A (n_mels, F) log-mel spoken `rate` times as fast (F / rate frames, at least 2; float32)."""
    out = mel.float()
    if rate == 1.0:
        return out.clone()
    size = max(2, round(mel.shape[1] / rate))
    return F.interpolate(out[None], size=size, mode="linear", align_corners=True)[0]


def warp_mel(mel: torch.Tensor, warp: float) -> torch.Tensor:
    """A (n_mels, F) log-mel whose bin i reads bin i * warp, linearly interpolated (float32; a new tensor)."""
    n_mels = mel.shape[0]
    out = mel.float()
    source = (torch.arange(n_mels, dtype=torch.float32, device=mel.device) * warp).clamp(max=n_mels - 1)
    low = source.floor().long()
    high = (low + 1).clamp(max=n_mels - 1)
    frac = (source - low)[:, None]
    return out[low] * (1 - frac) + out[high] * frac


def mel_view(mel: torch.Tensor, tempo: float = 1.0, warp: float = 1.0) -> torch.Tensor:
    """`mel` retimed by `tempo` and warped by `warp`, in `mel`'s dtype; (1, 1) returns `mel` itself."""
    if tempo <= 0 or warp <= 0:
        raise ValueError(f"tempo and warp must be positive, got {tempo} and {warp}")
    if tempo == 1.0 and warp == 1.0:
        return mel
    return warp_mel(retime(mel, tempo), warp).to(mel.dtype)
