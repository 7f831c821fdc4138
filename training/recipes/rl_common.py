"""Pieces the preference recipes (DPO, GSPO) share: the scoring module and user-audio features."""

from __future__ import annotations

from torch import nn

from core.checkpoint import Checkpoint
from core.model import DrVoiceModel, SequenceLogprobs
from core.sequence import Batch
from training.data import MelCache


class SequenceScorer(nn.Module):
    """A DrVoiceModel whose `forward` returns the per-sample reply log-probs.

    The Trainer wraps this module (DDP / DeepSpeed hook into `forward`), so the policy's
    `sequence_logprobs` runs through the wrapper and its gradients are synchronised.
    """

    def __init__(self, model: DrVoiceModel):
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> SequenceLogprobs:
        """Text-head + SRH log-probs of each sample's reply targets, (B,) each (core.model)."""
        return self.model.sequence_logprobs(batch)


def user_audio_features(ckpt: Checkpoint, mel_cache: str | None) -> MelCache | None:
    """User-speech features of a continuous-input model (cached log-mels); None for discrete input."""
    cfg = ckpt.model.config
    return MelCache(mel_cache, cfg.encoder["n_mels"]) if cfg.user_audio == "continuous" else None
