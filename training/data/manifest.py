"""Manifests: the one JSONL format of training, evaluation and the synthetic corpus (FORMATS.md).

Sample manifest, one JSON object per line::

    {"id": "qa-0001",
     "text": "what is three plus four?",      # user's words: typed input / transcript (STC, SUC)
     "audio": "wav/qa-0001.user.wav",          # user speech, relative to the manifest's folder
     "reply_text": "three plus four is seven.",
     "reply_audio": "wav/qa-0001.reply.wav",   # assistant speech (one fixed voice)
     "reply_tokens": [12, 7, ...],             # its 25 Hz codes (filled by training.data.tokenize)
     "system": null,                           # overrides the mode's Table 5 prompt
     "history": [{"text": ..., "audio": ..., "reply_text": ...}],   # earlier turns, oldest first
     "answers": ["seven", "7"], "category": "arithmetic", "voice": "slt"}

Required: `id`, `reply_text` and at least one of `text` / `audio`. Unknown keys are kept in
`ManifestItem.extra` and written back unchanged. Preference pairs (DPO) use the format that
`storage/export.py` writes; see `read_preference_pairs`.

Every error names the file and line (`train.jsonl:12: ...`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.modes import get_mode

ITEM_KEYS = (
    "id",
    "text",
    "audio",
    "reply_text",
    "reply_audio",
    "reply_tokens",
    "system",
    "history",
    "answers",
    "category",
    "voice",
)


class ManifestError(ValueError):
    """A bad manifest line; the message starts with `file:line:`."""


@dataclass
class HistoryEntry:
    """An earlier exchange of a multi-turn item."""

    reply_text: str  # the assistant's reply (kept as text)
    text: str | None = None  # the user's words
    audio: Path | None = None  # the user's speech (absolute path)
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, written back unchanged


HISTORY_KEYS = ("text", "audio", "reply_text")


@dataclass
class ManifestItem:
    """One sample of a manifest; paths are absolute."""

    id: str  # unique within the manifest
    reply_text: str  # the assistant's reply
    text: str | None = None  # the user's words: typed input (text modes), transcript (STC/SUC)
    audio: Path | None = None  # user speech WAV
    reply_audio: Path | None = None  # assistant speech WAV
    reply_tokens: list[int] | None = None  # 25 Hz codes of the assistant speech
    system: str | None = None  # system prompt overriding the mode's Table 5 prompt
    history: list[HistoryEntry] = field(default_factory=list)  # earlier turns, oldest first
    answers: list[str] = field(default_factory=list)  # accepted answers (evaluation)
    category: str | None = None  # question category (evaluation breakdowns)
    voice: str | None = None  # name of the user voice
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, written back unchanged
    where: str = field(default="", compare=False, repr=False)  # "file:line" for error messages

    @property
    def text_target(self) -> bool:
        """False for a reply whose text is an input only (`"text_target": false`, e.g.
        `training.data.counterfactual`): training learns its speech, never its text."""
        return self.extra.get("text_target", True) is not False

    def audio_paths(self) -> list[Path]:
        """User-speech files of this item (history turns first, then the current turn)."""
        paths = [h.audio for h in self.history if h.audio is not None]
        return paths + ([self.audio] if self.audio is not None else [])


@dataclass
class PreferenceHistoryEntry:
    """One message of a preference pair's earlier conversation."""

    role: str  # "user" or "assistant"
    text: str | None = None
    audio: Path | None = None  # user speech (user messages only)


@dataclass
class PreferencePrompt:
    """The shared input of both sides of a preference pair."""

    user_text: str | None = None  # typed input (text modes)
    user_audio: Path | None = None  # user speech (speech modes)
    history: list[PreferenceHistoryEntry] = field(default_factory=list)  # oldest first


@dataclass
class PreferenceResponse:
    """One side (chosen or rejected) of a preference pair: a complete assistant turn."""

    mode: str  # S2M S2T T2M T2T STC SAC SUC
    text: str  # the reply text (parallel phase or text-only reply)
    system_prompt: str | None = None  # the system prompt the turn was generated with
    transcript: str | None = None  # chain phase transcript (STC/SUC)
    draft_text: str | None = None  # chain phase text response (STC/SAC)
    speech_tokens: list[int] | None = None  # the exact 25 Hz codes generated (no bos/eos)
    audio: Path | None = None  # the reply waveform
    turn_id: str | None = None  # storage id of the turn


@dataclass
class PreferencePair:
    """A DPO preference pair (format of `storage/export.py`, or written by hand)."""

    id: str
    prompt: PreferencePrompt
    chosen: PreferenceResponse
    rejected: PreferenceResponse
    provenance: dict[str, Any] = field(default_factory=dict)  # where the vote came from (free form)
    where: str = field(default="", compare=False, repr=False)


# ---------------------------------------------------------------------------------------------
# Reading


def read_manifest(path: str | os.PathLike, *, check_files: bool = True) -> list[ManifestItem]:
    """Reads a sample manifest.

    Args:
        path: the JSONL file. Blank lines are skipped.
        check_files: raise when a referenced audio file does not exist.

    Returns:
        the items in file order, with audio paths resolved against the manifest's folder.

    Raises:
        ManifestError: bad JSON, missing/mistyped keys, duplicate ids, missing audio files; the
            message names the file and line.
    """
    path = Path(path)
    items: list[ManifestItem] = []
    seen: dict[str, str] = {}
    for where, record in json_lines(path):
        item = _parse_item(record, path.parent, where, check_files)
        if item.id in seen:
            raise ManifestError(f"{where}: duplicate id {item.id!r} (first at {seen[item.id]})")
        seen[item.id] = where
        items.append(item)
    return items


def read_preference_pairs(
    path: str | os.PathLike, *, audio_root: str | os.PathLike | None = None, check_files: bool = True
) -> list[PreferencePair]:
    """Reads preference pairs (JSONL; the format `python -m storage.export` writes).

    Args:
        path: the JSONL file.
        audio_root: folder relative audio paths are resolved against. `storage.export` writes them
            relative to the app's data folder: pass that folder (or export with `--absolute-paths`).
            Default: the file's own folder.
        check_files: raise when a referenced audio file does not exist.

    Returns:
        the pairs in file order.
    """
    path = Path(path)
    root = Path(audio_root) if audio_root is not None else path.parent
    return [_parse_pair(record, root, where, check_files) for where, record in json_lines(path)]


def json_lines(path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    """("file:line", object) per non-blank line of a JSON Lines file; ManifestError on bad JSON."""
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            where = f"{path}:{number}"
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ManifestError(f"{where}: invalid JSON ({error.msg} at column {error.colno})") from None
            if not isinstance(record, dict):
                raise ManifestError(f"{where}: expected a JSON object, got {type(record).__name__}")
            yield where, record


def _parse_item(record: dict[str, Any], root: Path, where: str, check_files: bool) -> ManifestItem:
    for key in ("id", "reply_text"):
        if key not in record:
            raise ManifestError(f"{where}: missing required key {key!r}")
    item_id = record["id"]
    if isinstance(item_id, int) and not isinstance(item_id, bool):
        item_id = str(item_id)
    if not isinstance(item_id, str) or not item_id:
        raise ManifestError(f"{where}: 'id' must be a non-empty string, got {item_id!r}")
    item = ManifestItem(
        id=item_id,
        reply_text=_string(record, "reply_text", where, required=True),
        text=_string(record, "text", where),
        audio=_audio(record, "audio", root, where, check_files),
        reply_audio=_audio(record, "reply_audio", root, where, check_files),
        reply_tokens=_tokens(record, "reply_tokens", where),
        system=_string(record, "system", where),
        history=[
            _history_entry(h, root, f"{where}: history[{i}]", check_files)
            for i, h in enumerate(_list(record, "history", where))
        ],
        answers=[_as_str(a, f"{where}: answers[{i}]") for i, a in enumerate(_list(record, "answers", where))],
        category=_string(record, "category", where),
        voice=_string(record, "voice", where),
        extra={k: v for k, v in record.items() if k not in ITEM_KEYS},
        where=where,
    )
    if item.text is None and item.audio is None:
        raise ManifestError(f"{where}: an item needs the user's 'text' or 'audio' (or both)")
    if not isinstance(record.get("text_target", True), bool):
        raise ManifestError(f"{where}: 'text_target' must be true or false")
    return item


def _history_entry(entry: Any, root: Path, where: str, check_files: bool) -> HistoryEntry:
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: expected an object with text/audio/reply_text")
    if "reply_text" not in entry:
        raise ManifestError(f"{where}: missing required key 'reply_text'")
    result = HistoryEntry(
        reply_text=_string(entry, "reply_text", where, required=True),
        text=_string(entry, "text", where),
        audio=_audio(entry, "audio", root, where, check_files),
        extra={k: v for k, v in entry.items() if k not in HISTORY_KEYS},
    )
    if result.text is None and result.audio is None:
        raise ManifestError(f"{where}: a history turn needs the user's 'text' or 'audio'")
    return result


def _parse_pair(record: dict[str, Any], root: Path, where: str, check_files: bool) -> PreferencePair:
    for key in ("id", "prompt", "chosen", "rejected"):
        if key not in record:
            raise ManifestError(f"{where}: missing required key {key!r}")
    prompt = record["prompt"]
    if not isinstance(prompt, dict):
        raise ManifestError(f"{where}: 'prompt' must be an object")
    history = []
    for i, entry in enumerate(_list(prompt, "history", f"{where}: prompt")):
        at = f"{where}: prompt.history[{i}]"
        if not isinstance(entry, dict) or entry.get("role") not in ("user", "assistant"):
            raise ManifestError(f"{at}: expected an object with role 'user' or 'assistant'")
        history.append(
            PreferenceHistoryEntry(
                role=entry["role"],
                text=_string(entry, "text", at),
                audio=_audio(entry, "audio", root, at, check_files),
            )
        )
    parsed_prompt = PreferencePrompt(
        user_text=_string(prompt, "user_text", f"{where}: prompt"),
        user_audio=_audio(prompt, "user_audio", root, f"{where}: prompt", check_files),
        history=history,
    )
    if parsed_prompt.user_text is None and parsed_prompt.user_audio is None:
        raise ManifestError(f"{where}: the prompt needs 'user_text' or 'user_audio'")
    provenance = record.get("provenance") or {}
    if not isinstance(provenance, dict):
        raise ManifestError(f"{where}: 'provenance' must be an object")
    return PreferencePair(
        id=_as_str(record["id"], f"{where}: id"),
        prompt=parsed_prompt,
        chosen=_response(record["chosen"], root, f"{where}: chosen", check_files),
        rejected=_response(record["rejected"], root, f"{where}: rejected", check_files),
        provenance=provenance,
        where=where,
    )


def _response(side: Any, root: Path, where: str, check_files: bool) -> PreferenceResponse:
    if not isinstance(side, dict):
        raise ManifestError(f"{where}: expected an object")
    for key in ("mode", "text"):
        if key not in side:
            raise ManifestError(f"{where}: missing required key {key!r}")
    try:
        mode = get_mode(_string(side, "mode", where, required=True)).name
    except ValueError as error:
        raise ManifestError(f"{where}: {error}") from None
    return PreferenceResponse(
        mode=mode,
        text=_string(side, "text", where, required=True),
        system_prompt=_string(side, "system_prompt", where),
        transcript=_string(side, "transcript", where),
        draft_text=_string(side, "draft_text", where),
        speech_tokens=_tokens(side, "speech_tokens", where),
        audio=_audio(side, "audio", root, where, check_files),
        turn_id=None if side.get("turn_id") is None else _as_str(side["turn_id"], f"{where}: turn_id"),
    )


def _string(record: dict[str, Any], key: str, where: str, required: bool = False) -> str | None:
    value = record.get(key)
    if value is None:
        if required:
            raise ManifestError(f"{where}: {key!r} must be a string, got null")
        return None
    if not isinstance(value, str):
        raise ManifestError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    return value


def _as_str(value: Any, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ManifestError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def _list(record: dict[str, Any], key: str, where: str) -> list[Any]:
    value = record.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ManifestError(f"{where}: {key!r} must be a list, got {type(value).__name__}")
    return value


def _tokens(record: dict[str, Any], key: str, where: str) -> list[int] | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value
    ):
        raise ManifestError(f"{where}: {key!r} must be a list of non-negative integers")
    return list(value)


def _audio(record: dict[str, Any], key: str, root: Path, where: str, check_files: bool) -> Path | None:
    value = _string(record, key, where)
    if value is None or value == "":
        return None
    path = Path(value).expanduser()
    path = (path if path.is_absolute() else root / path).resolve()
    if check_files and not path.is_file():
        raise ManifestError(f"{where}: {key} file not found: {path}")
    return path


# ---------------------------------------------------------------------------------------------
# Writing


def item_to_json(item: ManifestItem, root: str | os.PathLike) -> dict[str, Any]:
    """The JSON object of an item, with audio paths relative to `root` (the manifest's folder)."""

    def rel(path: Path | None) -> str | None:
        return None if path is None else Path(os.path.relpath(path, root)).as_posix()

    record: dict[str, Any] = {
        "id": item.id,
        "text": item.text,
        "audio": rel(item.audio),
        "reply_text": item.reply_text,
        "reply_audio": rel(item.reply_audio),
        "reply_tokens": None if item.reply_tokens is None else [int(t) for t in item.reply_tokens],
        "system": item.system,
        "history": [
            {"text": h.text, "audio": rel(h.audio), "reply_text": h.reply_text, **h.extra}
            for h in item.history
        ],
        "answers": list(item.answers),
    }
    if item.category is not None:
        record["category"] = item.category
    if item.voice is not None:
        record["voice"] = item.voice
    record.update({k: v for k, v in item.extra.items() if k not in record})
    return record


def write_manifest(items: Iterable[ManifestItem], path: str | os.PathLike) -> Path:
    """Writes items as JSONL (audio paths relative to the file's folder), replacing `path` atomically.

    Returns:
        the written path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = path.parent.resolve()
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for item in items:
            handle.write(json.dumps(item_to_json(item, root), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path
