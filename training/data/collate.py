"""Training data pipeline: CoM-Mixing variants -> Examples -> length-bucketed, resumable batches.

    items = read_manifest("data/train.tokens.jsonl")
    dataset = SpeechTextDataset(items, SequenceBuilder(config, tokenizer), MelCache("data/mels", 80))
    sampler = LengthBucketSampler(dataset.lengths, max_tokens=8192, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=ExampleCollator.for_builder(builder))
    ...
    checkpoint["sampler"] = sampler.state_dict()       # resume: sampler.load_state_dict(...)

Loss masks come from the layout (`core.sequence`): text and speech targets are IGNORE everywhere
except the assistant turn being trained, so the system prompt, the user turn and history turns
never contribute to the loss.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset, Sampler

from core.sequence import Batch, Example, Sample, SequenceBuilder, collate
from training.data.com_mixing import AudioFeatures, CoMMixingConfig, Variant, make_sample, plan_variants
from training.data.manifest import ManifestItem

logger = logging.getLogger(__name__)

OVER_LENGTH_POLICIES = ("drop", "keep", "error")


class SpeechTextDataset(Dataset):
    """CoM-Mixing variants of manifest items, built into `Example`s on access.

    The plan (which item in which mode) and every example's length are fixed at construction;
    user-audio features are read when an example is built (from a `MelCache`: precomputed).

    Args:
        items: manifest items (speech-output variants need `reply_tokens`).
        builder: the model's sequence builder (config + text tokenizer).
        audio_features: user-audio path -> log-mel (a `MelCache`) or codes; None for text-only data.
        mixing: which variants to build.
        max_positions: sequence budget; default the model's `max_positions` (2K, appendix A).
        over_length: examples longer than the budget are "drop"ped (counted and logged), "keep"
            (counted, flagged in `over_length_variants`), or raise ("error").
    """

    def __init__(
        self,
        items: Sequence[ManifestItem],
        builder: SequenceBuilder,
        audio_features: AudioFeatures | None = None,
        mixing: CoMMixingConfig | None = None,
        *,
        max_positions: int | None = None,
        over_length: str = "drop",
    ):
        if over_length not in OVER_LENGTH_POLICIES:
            raise ValueError(f"over_length must be one of {OVER_LENGTH_POLICIES}, got {over_length!r}")
        self.items = list(items)
        self.builder = builder
        self.audio_features = audio_features
        self.mixing = mixing or CoMMixingConfig()
        self.max_positions = max_positions or builder.config.max_positions
        # a MelCache lays sequences out from the cached shapes alone, without reading the tensors
        measure = getattr(audio_features, "shape_only", audio_features)
        self.variants: list[Variant] = []
        self.lengths: list[int] = []  # positions of each example
        self.over_length_variants: list[Variant] = []  # over the budget (dropped or kept)
        for variant in plan_variants(self.items, self.mixing):
            length = len(self._build(variant, measure))
            if length > self.max_positions:
                self.over_length_variants.append(variant)
                if over_length == "error":
                    raise ValueError(
                        f"{self.variant_name(variant)}: {length} positions exceed the budget of "
                        f"{self.max_positions} (max_positions)"
                    )
                if over_length == "drop":
                    continue
            self.variants.append(variant)
            self.lengths.append(length)
        if self.over_length_variants:
            logger.warning(
                "%d examples exceed %d positions (%s): %s",
                len(self.over_length_variants),
                self.max_positions,
                "dropped" if over_length == "drop" else "kept",
                ", ".join(self.variant_name(v) for v in self.over_length_variants[:5]),
            )

    def __len__(self) -> int:
        return len(self.variants)

    def __getitem__(self, index: int) -> Example:
        return self._build(self.variants[index], self.audio_features)

    def sample(self, index: int) -> Sample:
        """The Sample (before tokenisation) of example `index`."""
        variant = self.variants[index]
        return make_sample(self.items[variant.item_index], variant.mode, self.audio_features)

    def variant_name(self, variant: Variant) -> str:
        """ "<item id>/<mode>", as logs and error messages name an example."""
        return f"{self.items[variant.item_index].id}/{variant.mode}"

    def _build(self, variant: Variant, audio_features: AudioFeatures | None) -> Example:
        item = self.items[variant.item_index]
        try:
            return self.builder.example(make_sample(item, variant.mode, audio_features))
        except ValueError as error:
            raise ValueError(f"{item.where or item.id} ({variant.mode}): {error}") from error


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar length under a token budget; deterministic and resumable mid-epoch.

    Per epoch: shuffle the indices (seeded by seed and epoch), cut them into chunks of
    `chunk_size`, sort each chunk by length, cut it greedily into batches whose padded size
    (batch size x longest example) stays within `max_tokens`, then shuffle the batches. An example
    longer than the budget forms a batch of its own.

    Iterating yields the remaining batches of the current epoch, then moves to the next epoch.
    `state_dict()` records (epoch, position), so a run killed after any batch resumes with exactly
    the next one. With a DataLoader whose workers prefetch, the sampler runs ahead of training:
    pass the number of batches the loop consumed, `state_dict(position=n)`.

    Args:
        lengths: positions of each example (`SpeechTextDataset.lengths`).
        max_tokens: budget of padded positions per batch.
        seed: base seed of the shuffles.
        chunk_size: examples sorted together (large: tighter batches; small: more randomness).
        max_batch_size: optional cap on examples per batch.
        shuffle: False keeps the index order (no shuffling, still sorted per chunk).
        num_replicas, rank: data parallelism: each rank takes every num_replicas-th batch (the
            batch list is padded by repeating its start so all ranks get the same count).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        *,
        seed: int = 0,
        chunk_size: int = 4096,
        max_batch_size: int | None = None,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={num_replicas}), got {rank}")
        self.lengths = [int(n) for n in lengths]
        self.max_tokens = max_tokens
        self.seed = seed
        self.chunk_size = chunk_size
        self.max_batch_size = max_batch_size
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.position = 0  # batches of this epoch already yielded
        self._cache: tuple[int, list[list[int]]] | None = None
        too_long = sum(n > max_tokens for n in self.lengths)
        if too_long:
            logger.warning("%d examples are longer than max_tokens=%d: one per batch", too_long, max_tokens)

    def batches(self, epoch: int) -> list[list[int]]:
        """All batches (dataset indices) of `epoch` for this rank, in order."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = random.Random(f"{self.seed}:{epoch}")  # str seeds are hashed deterministically
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)
        batches: list[list[int]] = []
        for start in range(0, len(order), self.chunk_size):
            chunk = sorted(order[start : start + self.chunk_size], key=self.lengths.__getitem__)
            current: list[int] = []
            for index in chunk:  # ascending length: the newest example is the longest
                full = len(current) == self.max_batch_size
                if current and (full or (len(current) + 1) * self.lengths[index] > self.max_tokens):
                    batches.append(current)
                    current = []
                current.append(index)
            if current:
                batches.append(current)
        if self.shuffle:
            rng.shuffle(batches)
        if self.num_replicas > 1:
            short = -len(batches) % self.num_replicas
            batches = (batches + batches[:short])[self.rank :: self.num_replicas]
        self._cache = (epoch, batches)
        return batches

    def __len__(self) -> int:
        """Batches in the current epoch (for this rank)."""
        return len(self.batches(self.epoch))

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches(self.epoch)
        while self.position < len(batches):
            batch = batches[self.position]
            self.position += 1
            yield batch
        self.epoch += 1
        self.position = 0

    def set_epoch(self, epoch: int) -> None:
        """Starts `epoch` from its first batch."""
        self.epoch, self.position = epoch, 0

    def state_dict(self, position: int | None = None) -> dict[str, Any]:
        """The resume point.

        Args:
            position: batches of the current epoch the training loop consumed (default: those
                yielded; pass it when a DataLoader prefetches ahead).
        """
        return {
            "epoch": self.epoch,
            "position": self.position if position is None else int(position),
            "seed": self.seed,
            "num_examples": len(self.lengths),
            "max_tokens": self.max_tokens,
            "chunk_size": self.chunk_size,
            "max_batch_size": self.max_batch_size,
            "shuffle": self.shuffle,
            "num_replicas": self.num_replicas,
            "rank": self.rank,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resumes at `state`; the settings must match those it was saved with."""
        for key in ("seed", "num_examples", "max_tokens", "chunk_size", "max_batch_size", "shuffle"):
            mine = len(self.lengths) if key == "num_examples" else getattr(self, key)
            if key in state and state[key] != mine:
                raise ValueError(
                    f"sampler state was saved with {key}={state[key]!r} but this sampler has {mine!r}: "
                    "the batches would differ, so the run cannot resume at the same point"
                )
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])


def collate_examples(examples: Sequence[Example], pad_token_id: int, speech_pad: int) -> Batch:
    """Right-pads examples into a `Batch` (`core.sequence.collate`).

    Args:
        examples: tokenised examples of lengths L_i.
        pad_token_id: text id at padded positions (never attended, never a target).
        speech_pad: speech pad code (`config.speech_pad`).

    Returns:
        Batch with (B, max L_i) tensors; targets are IGNORE at padded positions.
    """
    return collate(list(examples), pad_token_id, speech_pad)


@dataclass(frozen=True)
class ExampleCollator:
    """`collate_examples` with fixed pad ids: a picklable `collate_fn` for DataLoader workers."""

    pad_token_id: int
    speech_pad: int

    def __call__(self, examples: Sequence[Example]) -> Batch:
        return collate_examples(examples, self.pad_token_id, self.speech_pad)

    @classmethod
    def for_builder(cls, builder: SequenceBuilder) -> ExampleCollator:
        pad = builder.tokenizer.pad_token_id
        if pad is None:
            pad = builder.ids["end_of_text"]
        return cls(int(pad), builder.config.speech_pad)
