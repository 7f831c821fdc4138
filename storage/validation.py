"""Errors raised by ``Repository`` and the checks it runs on its inputs before writing."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

# Keys accepted in the `timings` dict of Repository.finish_turn / cancel_turn.
TIMING_FIELDS: tuple[str, ...] = (
    "time_to_first_text_ms",  # request start -> first reply text
    "time_to_first_audio_ms",  # request start -> first audio chunk
    "real_time_factor",  # generation time / audio duration
    "audio_seconds",  # duration of the reply audio
)


class NotFoundError(LookupError):
    """No row with that id."""


class TurnStateError(RuntimeError):
    """The turn is not in the state the operation needs (e.g. finishing a turn twice)."""


class VoteRefusedError(RuntimeError):
    """The comparison cannot take this vote (a turn is not done, or it was already voted on)."""


def check_choice(name: str, value: object, allowed: tuple) -> None:
    """ValueError naming the allowed values unless ``value`` is one of them."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def check_json(name: str, value: object) -> None:
    """ValueError unless ``value`` serializes to strict JSON (no NaN)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be JSON-serializable: {error}") from error


def check_tokens(tokens: Sequence[int]) -> list[int]:
    """Speech tokens as plain non-negative Python ints (numpy integers are accepted)."""
    checked = []
    for token in tokens:
        if isinstance(token, bool) or int(token) != token or token < 0:
            raise ValueError(f"speech tokens must be non-negative integers, got {token!r}")
        checked.append(int(token))
    return checked


def check_timings(timings: Mapping[str, float | None]) -> dict[str, float | None]:
    """Timings restricted to ``TIMING_FIELDS``, as finite non-negative floats or None."""
    unknown = set(timings) - set(TIMING_FIELDS)
    if unknown:
        raise ValueError(f"unknown timing keys {sorted(unknown)}; expected some of {TIMING_FIELDS}")
    checked: dict[str, float | None] = {}
    for name, value in timings.items():
        if value is not None and (not math.isfinite(float(value)) or value < 0):
            raise ValueError(f"timing {name} must be a finite non-negative number, got {value!r}")
        checked[name] = None if value is None else float(value)
    return checked
