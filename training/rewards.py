"""Verifiable rewards for GSPO (paper appendix C: GSPO "on mathematical problems").

A reward function scores one sampled reply against its manifest item::

    def reward(reply_text: str, item: ManifestItem) -> float

`reply_text` is the decoded text of the reply (the parallel-phase text of speech-output modes, the
text reply of text-only modes; chain-phase transcripts and drafts are not included), `item` the
prompt's manifest item (its `answers`, `category`, `extra`, ...). Rewards must be finite; GSPO
normalises them within each group of G replies, so only their order and spread matter.

The recipe takes any such function as `--reward module:function` (default
`training.rewards:math_answer`); `load_reward` imports it.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable

from training.data.manifest import ManifestItem
from training.eval.scoring import contains_answer

RewardFn = Callable[[str, ManifestItem], float]

DEFAULT_REWARD = "training.rewards:math_answer"


def math_answer(reply_text: str, item: ManifestItem) -> float:
    """1.0 when an accepted answer of `item` occurs in the reply as whole words, else 0.0.

    Numbers match as digits or words ("7" == "seven", "twenty seven" == "27") and on word
    boundaries ("7" does not match "17" or "seventy"); a number that only echoes the question's
    operands does not count ("Twelve minus six is five." earns nothing for the answer "six"); see
    `training.eval.scoring.contains_answer`.

    Args:
        reply_text: the decoded reply.
        item: the manifest item; its `answers` list holds the accepted answers.

    Returns:
        1.0 or 0.0 (0.0 for an item without answers).
    """
    return 1.0 if contains_answer(reply_text, item.answers, item.text) else 0.0


def load_reward(spec: str) -> RewardFn:
    """Imports the reward function named by `spec` ("package.module:function").

    Raises:
        ValueError: a malformed spec, a module that cannot be imported, or a missing or
            non-callable attribute; the message names the spec.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr or ":" in attr:
        raise ValueError(f"--reward must look like 'package.module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"--reward {spec!r}: cannot import module {module_name!r} ({error})") from error
    fn = getattr(module, attr, None)
    if fn is None:
        raise ValueError(f"--reward {spec!r}: module {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise ValueError(f"--reward {spec!r}: {attr!r} is a {type(fn).__name__}, not a function")
    return fn


def checked_reward(fn: RewardFn, reply_text: str, item: ManifestItem) -> float:
    """Calls `fn` and insists on a finite number (the error names the item)."""
    value = fn(reply_text, item)
    try:
        value = float(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"reward for item {item.id!r} is not a number: {value!r}") from error
    if not math.isfinite(value):
        raise ValueError(f"reward for item {item.id!r} is not finite: {value}")
    return value
