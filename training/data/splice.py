"""Unrelated speech spliced before or after a user question: words the model must learn to pass over.

    fillers = filler_pool(read_manifest("runs/demo/general.tokens.jsonl"))
    voices = {item.audio: item.voice for item in read_manifest("runs/demo/train.tokens.jsonl")}
    features = SplicedMels(MelCache("runs/demo/mels", 80), fillers, voices, probability=0.5)
    features("data/corpus/audio/train/q1.wav")   # sometimes "<other words> <gap> <question>"

A model trained only on the corpus's few phrasings per intent hears every training question as a
whole it has memorised; a held-out phrasing with one new word ("Many thanks!", "What is the reverse
of big?") then sounds like nothing it knows, and the reply follows the utterance's rhythm instead of
its key word. In text the same model passes over unknown words (T2T answers held-out phrasings
almost always). Splicing a stretch of general English speech (`training.data.general_speech`), by
the same voice where the pool has it, around training questions with the reply unchanged teaches
the speech path the same habit.

One splice: a random contiguous 40-100% of a filler recording's log-mel, a gap of 0.1-0.4 s at the
question's silence floor, placed before or after the question (even odds). The question's own
frames are untouched, so the result holds them as one contiguous block.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

FILLER_SHARE = (0.4, 1.0)  # part of the filler recording kept
GAP_FRAMES = (10, 40)  # silence between filler and question, in 10 ms mel frames


def filler_pool(items: Iterable) -> dict[str, list[Path]]:
    """voice -> filler recordings (manifest items with audio); the voice "" collects unnamed ones."""
    pool: dict[str, list[Path]] = defaultdict(list)
    for item in items:
        if item.audio is not None:
            pool[item.voice or ""].append(Path(item.audio))
    if not pool:
        raise ValueError("the filler manifest holds no recordings")
    return dict(pool)


class SplicedMels:
    """User-audio features (`path -> mels`) with, at `probability`, filler speech spliced on.

    Sequence layouts are planned from the unspliced shapes (`shape_only` is the wrapped source's):
    a spliced example is longer than its plan, so a batch may hold more audio positions than
    `max_tokens` (at 5 Hz a whole filler sentence is ~15 positions).

    Args:
        features: a `MelCache` or any `path -> (n_mels, F)` callable (with `shape_only` if it has one).
        fillers: voice -> recordings (`filler_pool`).
        voices: question recording -> its voice; a question whose voice has no fillers (or is not
            listed) gets a filler of any voice.
        probability: share of calls that splice.
        seed: seeds the draws.
        max_frames: a splice that would make the log-mel longer than this is not made.
    """

    def __init__(
        self,
        features,
        fillers: Mapping[str, list[Path]],
        voices: Mapping[str | os.PathLike, str] | None = None,
        probability: float = 0.5,
        seed: int = 0,
        max_frames: int = 3000,
    ):
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability}")
        if not any(fillers.values()):
            raise ValueError("no filler recordings")
        self.features = features
        self.fillers = {voice: list(paths) for voice, paths in fillers.items() if paths}
        self.every_filler = [p for paths in self.fillers.values() for p in paths]
        self.voices = {str(Path(k)): v for k, v in (voices or {}).items()}
        self.probability = probability
        self.max_frames = max_frames
        self.generator = torch.Generator().manual_seed(seed)
        self.shape_only = getattr(features, "shape_only", features)

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def _pick(self, choices: list) -> object:
        return choices[int(torch.randint(len(choices), (), generator=self.generator))]

    def __call__(self, path: str | os.PathLike) -> torch.Tensor:
        mel = self.features(path)
        if self._uniform() >= self.probability:
            return mel
        voice = self.voices.get(str(Path(path)))
        filler = self.features(self._pick(self.fillers.get(voice) or self.every_filler))
        frames = filler.shape[-1]
        keep = max(
            1, round(frames * (FILLER_SHARE[0] + (FILLER_SHARE[1] - FILLER_SHARE[0]) * self._uniform()))
        )
        start = int(torch.randint(frames - keep + 1, (), generator=self.generator))
        gap = int(torch.randint(GAP_FRAMES[0], GAP_FRAMES[1] + 1, (), generator=self.generator))
        before = self._uniform() < 0.5
        if mel.shape[-1] + keep + gap > self.max_frames:
            return mel
        silence = mel.new_full((mel.shape[0], gap), float(mel.min()))
        piece = filler[:, start : start + keep].to(mel.dtype)
        parts = (piece, silence, mel) if before else (mel, silence, piece)
        return torch.cat(parts, dim=-1)
