"""CoM-Mixing (paper §3.3): every speech-to-speech item becomes variants of the seven patterns.

For one manifest item (user text + user speech -> reply text + reply speech tokens), Table 1:

| mode | user turn   | assistant targets                                               |
|------|-------------|-----------------------------------------------------------------|
| S2M  | speech      | reply text and reply speech in parallel                         |
| S2T  | speech      | reply text                                                      |
| T2M  | text        | reply text and reply speech in parallel                         |
| T2T  | text        | reply text                                                      |
| STC  | speech      | "{transcript}\\n{reply text}" <|audio_bos|> then parallel reply  |
| SAC  | speech      | "{reply text}" <|audio_bos|> then parallel reply                 |
| SUC  | speech      | "{transcript}" <|audio_bos|> then parallel reply                 |

The transcript is the item's `text`; the chain draft is its `reply_text`. Each Sample carries its
mode and `SequenceBuilder` writes the mode's Table 5 system prompt (an item's `system` overrides it).

A variant needs its inputs: speech-input modes need the user audio, text-input modes and the
transcript of STC/SUC need the user text, speech-output modes need the reply's speech tokens
(run `python -m training.data.tokenize` first). An item with user speech and text but no reply
(`reply_text` "", e.g. `training.data.general_speech --words questions`) makes transcript-only STC
and SUC variants: the chain phase's transcript is the only target (`Sample.transcript_only`), so the
LLM learns to write what it hears in word orders no question has. An item whose reply text is an
input only (`"text_target": false`, `training.data.counterfactual`) makes T2M and S2M variants whose
targets are the reply's speech alone (`Sample.text_target`). Variants an item cannot make are
skipped and counted (`plan_variants` logs the counts per mode and reason).

Mixture: `ratios=None` keeps every variant an item can make (the paper: "construct data variants
following the seven interaction patterns"); `ratios={"S2M": 2, "STC": 1, ...}` instead draws
`variants_per_item` distinct modes per item with probability proportional to their weights among
the modes that item can make (weight 0 or absent: never).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from core.modes import MODE_NAMES, get_mode
from core.sequence import HistoryTurn, Sample, UserInput
from training.data.manifest import ManifestItem, PreferencePair, PreferenceResponse

logger = logging.getLogger(__name__)

ALL_MODES: tuple[str, ...] = MODE_NAMES  # S2M S2T T2M T2T STC SAC SUC

# user-audio path -> log-mel (n_mels, frames) for continuous input, or 25 Hz codes for discrete input
AudioFeatures = Callable[[Path], "torch.Tensor | list[int]"]


@dataclass(frozen=True)
class CoMMixingConfig:
    """Which variants of each item go into the training mixture."""

    modes: tuple[str, ...] = ALL_MODES  # patterns to build (any subset of Table 1)
    ratios: dict[str, float] | None = None  # None: every variant; else relative weight per mode
    variants_per_item: int = 1  # with ratios: distinct modes drawn per item
    seed: int = 0  # seeds the draws (with ratios)

    def __post_init__(self) -> None:
        modes = tuple(get_mode(m).name for m in self.modes)  # raises on unknown names
        if not modes:
            raise ValueError("CoMMixingConfig.modes is empty")
        object.__setattr__(self, "modes", modes)
        if self.ratios is not None:
            ratios = {get_mode(m).name: float(w) for m, w in self.ratios.items()}
            if any(w < 0 for w in ratios.values()):
                raise ValueError(f"CoMMixingConfig.ratios must be >= 0, got {self.ratios}")
            if not any(ratios.get(m, 0.0) > 0 for m in modes):
                raise ValueError(f"CoMMixingConfig.ratios gives no positive weight to any of {modes}")
            object.__setattr__(self, "ratios", ratios)
        if self.variants_per_item < 1:
            raise ValueError(f"CoMMixingConfig.variants_per_item must be >= 1, got {self.variants_per_item}")


@dataclass(frozen=True)
class Variant:
    """One planned training sample: an item of the manifest in one mode."""

    item_index: int  # index into the item list
    mode: str  # S2M ... SUC


def _replyless(item: ManifestItem) -> bool:
    """Speech with no reply: it makes transcript-only STC/SUC samples only."""
    return not item.reply_text and not item.reply_tokens


def missing_input(item: ManifestItem, mode: str) -> str | None:
    """Why `item` cannot make a `mode` variant, or None when it can."""
    m = get_mode(mode)
    replyless = _replyless(item)
    if replyless and not (m.speech_input and m.has_transcript):
        return "no reply (transcript-only: STC, SUC)"
    if not item.text_target and (not m.speech_output or m.is_chain):
        return "reply text is an input only (speech targets: T2M, S2M)"
    if m.speech_input and item.audio is None:
        return "no user audio"
    if (not m.speech_input or m.has_transcript) and not item.text:
        return "no user text"
    if m.speech_output and not item.reply_tokens and not replyless:
        return "no reply tokens"
    return None


def select_modes(
    item: ManifestItem,
    modes: Sequence[str] = ALL_MODES,
    ratios: dict[str, float] | None = None,
    rng: random.Random | None = None,
    *,
    variants_per_item: int = 1,
    skipped: Counter | None = None,
) -> list[str]:
    """The modes of `item` that go into the mixture (in Table 1 order).

    Args:
        item: a manifest item.
        modes: candidate modes.
        ratios: None keeps every mode the item can make; else draws `variants_per_item` distinct
            modes with probability proportional to these weights.
        rng: source of the draws; None seeds one from the item id (deterministic).
        skipped: counts `(mode, reason)` of the modes the item cannot make.
    """
    eligible = []
    for mode in (get_mode(m).name for m in modes):
        reason = missing_input(item, mode)
        if reason is None:
            eligible.append(mode)
        elif skipped is not None:
            skipped[(mode, reason)] += 1
    if ratios is None:
        return eligible
    rng = rng if rng is not None else random.Random(item.id)
    pool = [m for m in eligible if ratios.get(m, 0.0) > 0]
    chosen: list[str] = []
    while pool and len(chosen) < variants_per_item:  # weighted draws without replacement
        pick = rng.choices(pool, weights=[ratios[m] for m in pool])[0]
        chosen.append(pick)
        pool.remove(pick)
    return [m for m in MODE_NAMES if m in chosen]


def make_sample(item: ManifestItem, mode: str, audio_features: AudioFeatures | None) -> Sample:
    """The `mode` variant of `item` (see the module docstring's table).

    Args:
        item: a manifest item that can make this mode (`missing_input(item, mode) is None`).
        mode: S2M ... SUC.
        audio_features: user-audio path -> log-mel (continuous models, e.g. a `MelCache`) or speech
            codes (discrete models); needed by speech-input modes and by spoken history turns.
    """
    m = get_mode(mode)
    reason = missing_input(item, m.name)
    if reason is not None:
        raise ValueError(f"item {item.id!r} cannot make a {m.name} sample: {reason}")
    user = _user(item.text, item.audio, m.speech_input, audio_features, item.id)
    history = [
        HistoryTurn(_user(h.text, h.audio, m.speech_input, audio_features, item.id), h.reply_text)
        for h in item.history
    ]
    return Sample(
        mode=m.name,
        user=user,
        reply_text=item.reply_text,
        reply_speech=list(item.reply_tokens or []) if m.speech_output else [],
        transcript=item.text if m.has_transcript else "",
        draft=item.reply_text if m.has_draft else None,
        history=history,
        system_prompt=item.system,
        transcript_only=_replyless(item),
        text_target=item.text_target,
    )


def expand(
    item: ManifestItem,
    modes: Sequence[str] = ALL_MODES,
    ratios: dict[str, float] | None = None,
    rng: random.Random | None = None,
    *,
    audio_features: AudioFeatures | None = None,
    variants_per_item: int = 1,
    skipped: Counter | None = None,
) -> list[Sample]:
    """CoM-Mixing of one item: its variants of the seven patterns (Table 1), in Table 1 order.

    Args:
        item: a manifest item.
        modes, ratios, rng, variants_per_item, skipped: see `select_modes`.
        audio_features: user-audio path -> log-mel (e.g. a `MelCache`) or codes; required when
            the item has user audio and a speech-input mode is selected.

    Returns:
        one Sample per selected mode.
    """
    selected = select_modes(item, modes, ratios, rng, variants_per_item=variants_per_item, skipped=skipped)
    return [make_sample(item, mode, audio_features) for mode in selected]


def plan_variants(items: Sequence[ManifestItem], config: CoMMixingConfig) -> list[Variant]:
    """The CoM-Mixing plan of a whole manifest (deterministic given `config.seed`); logs skips."""
    rng = random.Random(config.seed)
    skipped: Counter = Counter()
    plan = [
        Variant(index, mode)
        for index, item in enumerate(items)
        for mode in select_modes(
            item,
            config.modes,
            config.ratios,
            rng,
            variants_per_item=config.variants_per_item,
            skipped=skipped,
        )
    ]
    if skipped:
        detail = ", ".join(f"{mode} {reason}: {n}" for (mode, reason), n in sorted(skipped.items()))
        logger.info("CoM-Mixing skipped %d variants (%s)", sum(skipped.values()), detail)
    counts = Counter(v.mode for v in plan)
    logger.info(
        "CoM-Mixing: %d items -> %d samples (%s)",
        len(items),
        len(plan),
        ", ".join(f"{m} {counts[m]}" for m in MODE_NAMES if counts[m]),
    )
    return plan


def preference_samples(
    pair: PreferencePair, audio_features: AudioFeatures | None = None
) -> tuple[Sample, Sample]:
    """The (chosen, rejected) training Samples of a DPO preference pair.

    Each side keeps its own mode and system prompt (an A/B comparison may compare modes); the
    speech of a speech-output side is its generated `speech_tokens`.
    """
    return _side_sample(pair, pair.chosen, audio_features), _side_sample(pair, pair.rejected, audio_features)


def _side_sample(
    pair: PreferencePair, side: PreferenceResponse, audio_features: AudioFeatures | None
) -> Sample:
    mode = get_mode(side.mode)
    if mode.speech_output and not side.speech_tokens:
        raise ValueError(f"{pair.where}: {mode.name} side {side.turn_id!r} has no speech_tokens")
    prompt = pair.prompt
    history: list[HistoryTurn] = []
    pending: UserInput | None = None
    for entry in prompt.history:
        if entry.role == "user":
            pending = _user(entry.text, entry.audio, mode.speech_input, audio_features, pair.id)
        elif pending is not None:  # an assistant message closes the exchange
            history.append(HistoryTurn(pending, entry.text or ""))
            pending = None
    return Sample(
        mode=mode.name,
        user=_user(prompt.user_text, prompt.user_audio, mode.speech_input, audio_features, pair.id),
        reply_text=side.text,
        reply_speech=list(side.speech_tokens or []) if mode.speech_output else [],
        transcript=side.transcript or "",
        draft=side.draft_text,
        history=history,
        system_prompt=side.system_prompt,
    )


def _user(
    text: str | None,
    audio: Path | None,
    prefer_audio: bool,
    audio_features: AudioFeatures | None,
    owner: str,
) -> UserInput:
    """A user turn: speech when preferred and available (else text), text otherwise (else speech)."""
    use_audio = audio is not None and (prefer_audio or not text)
    if not use_audio:
        return UserInput(text=text)
    if audio_features is None:
        raise ValueError(f"item {owner!r} needs user-audio features: pass audio_features (e.g. a MelCache)")
    features = audio_features(audio)
    if isinstance(features, torch.Tensor):
        return UserInput(mels=features)
    return UserInput(speech_tokens=[int(t) for t in features])
