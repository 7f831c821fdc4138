"""Log-mel augmentation of user speech: more "voices" and speaking rates than the corpus holds.

    generator = torch.Generator().manual_seed(0)
    noisy = augment_mel(mel, generator)                    # tempo, mel warp, masks
    features = AugmentedMels(MelCache("runs/demo/mels", 80), seed=0)
    features("data/wav/q1.wav")                            # a fresh perturbation on every call

One perturbation is: tempo 0.85-1.15 (the time axis resampled), a vocal-tract-length-like warp of
the mel axis by 0.88-1.12, then two time masks (up to 20 frames) and two frequency masks (up to 10
bins) filled with the utterance's mean (SpecAugment).
"""

from __future__ import annotations

import os

import torch

from core.mel_views import retime, warp_mel

TEMPO = (0.85, 1.15)
MEL_WARP = (0.88, 1.12)
MASKS = ((10, 0), (10, 0), (20, 1), (20, 1))  # (widest, axis): two frequency, two time masks


def augment_mel(mel: torch.Tensor, generator: torch.Generator, tempo: bool = True) -> torch.Tensor:
    """A randomly perturbed copy of a (n_mels, F) log-mel; `mel` itself is left as it was.

    Args:
        tempo: resample the time axis (the frame count changes by up to 15%); False keeps F.
    """

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=generator))

    rate = uniform(*TEMPO)  # > 1: faster speech, fewer frames (drawn always: same stream either way)
    out = retime(mel, rate) if tempo else mel.float()
    out = warp_mel(out, uniform(*MEL_WARP))  # a new tensor: the input is untouched
    fill = out.mean()
    for widest, axis in MASKS:
        extent = out.shape[axis]
        width = int(torch.randint(0, min(widest, extent // 4) + 1, (), generator=generator))
        start = int(torch.randint(0, extent - width + 1, (), generator=generator))
        if axis == 0:
            out[start : start + width] = fill
        else:
            out[:, start : start + width] = fill
    return out.to(mel.dtype)


class AugmentedMels:
    """User-audio features (`path -> mels`) perturbed afresh on every call.

    Sequence layouts are planned from the unperturbed shapes (`shape_only` is the wrapped
    source's), so with `tempo` an example's audio span differs from the plan by up to 15% and a
    batch may hold that many more audio positions than `max_tokens`.

    Args:
        features: a `MelCache` or any `path -> (n_mels, F)` callable with `shape_only`.
        seed: seeds the perturbations (resuming a run does not replay them).
        tempo: see `augment_mel`.
    """

    def __init__(self, features, seed: int = 0, tempo: bool = True):
        self.features = features
        self.tempo = tempo
        self.generator = torch.Generator().manual_seed(seed)
        self.shape_only = getattr(features, "shape_only", features)

    def __call__(self, path: str | os.PathLike) -> torch.Tensor:
        return augment_mel(self.features(path), self.generator, self.tempo)
