"""Recipe configs: typed dataclasses that are both the YAML file and the command line.

Every field of a recipe's config dataclass is a `--flag` (with its help text) and a YAML key; the
YAML file given with `--config` sets defaults, flags override it:

    python -m training.recipes.sft --config training/configs/sft_tiny.yaml --max_steps 50
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def arg(default: Any, help: str) -> Any:  # noqa: A002 - mirrors argparse
    """A dataclass field with help text (shown by --help)."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def _base_type(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else str
    return tp


def _parse_value(tp: Any, text: str) -> Any:
    base = _base_type(tp)
    if text.lower() in ("none", "null") and base is not bool:
        return None
    if base is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")
    if base in (int, float, str):
        return base(text)
    return yaml.safe_load(text)  # lists / dicts as YAML flow syntax


def parse_config(cls: type[T], argv: list[str] | None = None, description: str = "") -> T:
    """Builds `cls` from `--config FILE.yaml` plus `--field value` overrides.

    Raises:
        SystemExit with a message naming the bad key / flag (argparse behaviour).
    """
    hints = typing.get_type_hints(cls)
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="YAML file whose keys are the fields below")
    # the `deepspeed` launcher (and torch.distributed.launch) append --local_rank=N; LOCAL_RANK holds it too
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        parser.add_argument(
            f"--{f.name}",
            type=lambda s, tp=hints[f.name]: _parse_value(tp, s),
            default=argparse.SUPPRESS,
            help=f"{f.metadata.get('help', '')} (default: {default!r})".replace("%", "%%"),
        )
    ns = vars(parser.parse_args(argv))
    local_rank = ns.pop("local_rank", None)
    if local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(local_rank))
    values: dict[str, Any] = {}
    if ns.get("config"):
        data = yaml.safe_load(Path(ns.pop("config")).read_text()) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            parser.error(f"unknown keys in the config file: {', '.join(unknown)}")
        values.update(data)
    ns.pop("config", None)
    values.update(ns)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
        raise  # unreachable


def save_config(config: Any, path: Path) -> None:
    """Writes the resolved config next to the run's outputs (YAML)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
