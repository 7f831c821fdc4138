"""Sampling settings and token samplers for text and speech."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from core.mel_views import VIEWS
from core.modes import MODE_NAMES


@dataclass(frozen=True)
class SamplingConfig:
    """How tokens are drawn (0 temperature = greedy)."""

    temperature: float = 0.0  # text temperature; 0 = greedy (the small demo model answers best greedily)
    top_p: float = 1.0  # text nucleus sampling (1 = off)
    top_k: int = 0  # text top-k (0 = off)
    speech_temperature: float = 0.0  # speech temperature; 0 = greedy
    speech_top_p: float = 1.0  # speech nucleus sampling (1 = off)
    speech_top_k: int = 0  # speech top-k (0 = off)
    repetition_penalty: float = 1.0  # on speech tokens seen in the last `repetition_window` (1 = off)
    repetition_window: int = 25  # speech tokens (1 s at 25 Hz)
    seed: int | None = None  # makes sampling reproducible
    follow_draft: bool = True  # STC/SAC: the parallel text repeats the drafted response (as trained)
    max_new_steps: int = 600  # LLM steps of the reply (600 = 2 min of speech at 5 Hz)
    # Speech input heard in this many of `core.mel_views.VIEWS` (faster/slower, higher/lower); each
    # text token is chosen from the mean of their log-probabilities, the speech is said from the mean
    # of their hidden states. 1 = the recording as it is.
    audio_views: int = 1
    # S2M/T2M: weight of the text-only twin (S2T/T2T) of the same turn when the parallel text is
    # drawn (0 = off, 1 = the twin writes the text); the speech is the speaking mode's own.
    text_guide: float = 0.0

    def __post_init__(self) -> None:
        for name in ("temperature", "speech_temperature"):
            if not 0.0 <= getattr(self, name) <= 5.0:
                raise ValueError(f"{name} must be in [0, 5], got {getattr(self, name)}")
        for name in ("top_p", "speech_top_p"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        for name in ("top_k", "speech_top_k", "repetition_window"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 1.0 <= self.repetition_penalty <= 10.0:
            raise ValueError(f"repetition_penalty must be in [1, 10], got {self.repetition_penalty}")
        if not 1 <= self.audio_views <= len(VIEWS):
            raise ValueError(f"audio_views must be in [1, {len(VIEWS)}], got {self.audio_views}")
        if not 0.0 <= self.text_guide <= 1.0:
            raise ValueError(f"text_guide must be in [0, 1], got {self.text_guide}")
        if self.max_new_steps < 1:
            raise ValueError(f"max_new_steps must be >= 1, got {self.max_new_steps}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SamplingConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class ModeSampling:
    """Decoding settings per interaction mode: `default` for every mode, `modes` for the ones that
    differ (a checkpoint's recommended settings, `core.checkpoint.GENERATION_FILE`)."""

    default: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)
    modes: dict[str, SamplingConfig] = dataclasses.field(default_factory=dict)

    def for_mode(self, mode: str) -> SamplingConfig:
        return self.modes.get(mode.upper(), self.default)

    def replace(self, **changes) -> ModeSampling:
        """The same settings with `changes` made in every mode's."""
        return ModeSampling(
            dataclasses.replace(self.default, **changes),
            {m: dataclasses.replace(s, **changes) for m, s in self.modes.items()},
        )

    def to_dict(self) -> dict:
        """The fields that differ from `SamplingConfig()`, then per mode those that differ from `default`."""
        base, default = SamplingConfig().to_dict(), self.default.to_dict()
        out: dict = {k: v for k, v in default.items() if v != base[k]}
        modes = {m: {k: v for k, v in s.to_dict().items() if v != default[k]} for m, s in self.modes.items()}
        if modes:
            out["modes"] = modes
        return out

    @classmethod
    def from_dict(cls, data: dict) -> ModeSampling:
        """Inverse of `to_dict`.

        Raises:
            ValueError: not an object of `SamplingConfig` fields (and "modes"), a mode that does not
                exist, or a value out of range (the message names it).
        """

        def config(fields, base: SamplingConfig, where: str) -> SamplingConfig:
            if not isinstance(fields, dict):
                raise ValueError(f"{where} must be a JSON object of sampling settings")
            unknown = sorted(set(fields) - set(SamplingConfig.__dataclass_fields__))
            if unknown:
                raise ValueError(f"{where} has unknown sampling settings: {', '.join(unknown)}")
            try:
                return dataclasses.replace(base, **fields)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{where}: {exc}") from None

        if not isinstance(data, dict):
            raise ValueError("the settings must be a JSON object of sampling settings")
        data = dict(data)
        modes = data.pop("modes", {})
        default = config(data, SamplingConfig(), "the settings")
        if not isinstance(modes, dict) or not set(modes) <= set(MODE_NAMES):
            raise ValueError(f"'modes' must map mode names ({', '.join(MODE_NAMES)}) to settings")
        return cls(default, {m: config(f, default, f"mode {m}") for m, f in modes.items()})


def apply_repetition_penalty(logits: torch.Tensor, recent: list[int], penalty: float) -> torch.Tensor:
    """CTRL-style penalty: divides positive / multiplies negative logits of recently used tokens.

    Args:
        logits: (V,) float logits.
        recent: token ids seen recently (duplicates count once).
        penalty: >= 1 (1 leaves logits unchanged).
    Returns:
        (V,) penalised logits (a new tensor).
    """
    if penalty == 1.0 or not recent:
        return logits
    out = logits.clone()
    idx = torch.tensor(sorted(set(recent)), dtype=torch.long, device=logits.device)
    vals = out[idx]
    out[idx] = torch.where(vals > 0, vals / penalty, vals * penalty)
    return out


def sample_token(
    logits: torch.Tensor,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> int:
    """Draws one token id from (V,) logits (-inf entries are never drawn)."""
    logits = logits.float()
    if temperature <= 0.0:
        return int(torch.argmax(logits))
    logits = logits / temperature
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cum - torch.softmax(sorted_logits, dim=-1) > top_p  # keep the smallest set reaching top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(0, order, sorted_logits)
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
