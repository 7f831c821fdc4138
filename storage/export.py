"""Export A/B votes as DPO preference pairs (JSONL), read by ``training/recipes/dpo.py``.

Usage::

    python -m storage.export --db sqlite:///data/drvoice.sqlite3 --out pairs.jsonl \\
        [--data-dir data] [--absolute-paths]

``--db`` also takes a plain SQLite file path; without it, ``$DRVOICE_DB_URL`` or
``<data-dir>/drvoice.sqlite3`` is used. The database is upgraded to the newest schema first.

Format (format version 1): one JSON object per line, one line per comparison voted ``A`` or ``B``
(oldest vote first). Votes ``tie`` and ``both_bad`` produce no line::

    {
      "id": "<comparison id>",
      "prompt": {
        "user_text": "..." | null,            # typed input
        "user_audio": "audio/3f/3f9c...wav" | null,
        "history": [                          # earlier finished turns of the chosen side's
          {"role": "user", "text": "...", "audio": "audio/..." | null},   # conversation,
          {"role": "assistant", "text": "..."},                           # oldest first
          ...
        ]
      },
      "chosen": {                             # the turn the user voted for
        "turn_id": "...",
        "mode": "S2M",                        # S2M S2T T2M T2T STC SAC SUC
        "system_prompt": "...",
        "text": "...",                        # the (parallel or text-only) reply text
        "transcript": "..." | null,           # chain modes STC/SUC
        "draft_text": "..." | null,           # chain modes STC/SAC
        "speech_tokens": [int, ...] | null,   # the exact 25 Hz codes generated (no bos/eos)
        "audio": "audio/ab/ab12...wav" | null # the reply waveform
      },
      "rejected": { same keys as "chosen" },
      "provenance": {
        "source": "drvoice-app",
        "version": 1,
        "comparison_id": "...",
        "vote": "A" | "B",                    # side A = label_a, side B = label_b
        "label_a": "...", "label_b": "...",   # what was compared (mode or checkpoint id)
        "blinded": true,
        "checkpoint_ids": {"chosen": "...", "rejected": "..."},
        "sampling": {"chosen": {...}, "rejected": {...}},
        "voted_at": "2025-01-02T10:11:12.123456+00:00",   # ISO 8601, UTC
        "comment": "..." | null
      }
    }

Audio paths are relative to the data dir unless ``--absolute-paths`` is given (the prompt's user
audio is the user audio of the chosen turn; in an A/B comparison both sides got the same input).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

from storage.records import PreferencePair, TurnRecord
from storage.repository import Repository

logger = logging.getLogger(__name__)

SOURCE = "drvoice-app"
FORMAT_VERSION = 1


def pair_to_json(pair: PreferencePair, data_dir: Path | None = None) -> dict[str, Any]:
    """The JSONL object of one pair (see the module docstring).

    Args:
        pair: from ``Repository.iter_preference_pairs``.
        data_dir: when given, audio paths are made absolute under it.
    """

    def audio(relative: str | None) -> str | None:
        if relative is None or data_dir is None:
            return relative
        return str((data_dir / relative).resolve())

    def side(turn: TurnRecord) -> dict[str, Any]:
        return {
            "turn_id": turn.id,
            "mode": turn.mode,
            "system_prompt": turn.system_prompt,
            "text": turn.reply_text,
            "transcript": turn.transcript,
            "draft_text": turn.draft_text,
            "speech_tokens": turn.speech_tokens,
            "audio": audio(turn.reply_audio_path),
        }

    comparison, chosen, rejected = pair.comparison, pair.chosen, pair.rejected
    history = [
        {**entry, "audio": audio(entry["audio"])} if "audio" in entry else entry for entry in pair.history
    ]
    return {
        "id": comparison.id,
        "prompt": {
            "user_text": chosen.user_text,
            "user_audio": audio(chosen.user_audio_path),
            "history": history,
        },
        "chosen": side(chosen),
        "rejected": side(rejected),
        "provenance": {
            "source": SOURCE,
            "version": FORMAT_VERSION,
            "comparison_id": comparison.id,
            "vote": comparison.vote,
            "label_a": comparison.label_a,
            "label_b": comparison.label_b,
            "blinded": comparison.blinded,
            "checkpoint_ids": {"chosen": chosen.checkpoint_id, "rejected": rejected.checkpoint_id},
            "sampling": {"chosen": chosen.sampling, "rejected": rejected.sampling},
            "voted_at": comparison.voted_at.isoformat() if comparison.voted_at else None,
            "comment": comparison.comment,
        },
    }


def export_preference_pairs(repo: Repository, out: str | os.PathLike, absolute_paths: bool = False) -> int:
    """Write all preference pairs to ``out`` (JSONL, replaced atomically). Returns the count."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    count = 0
    with tmp.open("w", encoding="utf-8") as f:
        for pair in repo.iter_preference_pairs():
            record = pair_to_json(pair, repo.data_dir if absolute_paths else None)
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    os.replace(tmp, out)
    logger.info("wrote %d preference pairs to %s", count, out)
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m storage.export",
        description="Export DrVoice A/B votes (A or B; not tie / both_bad) as DPO preference pairs (JSONL).",
    )
    parser.add_argument(
        "--db",
        default=None,
        help="SQLAlchemy URL or SQLite file path (default: $DRVOICE_DB_URL, else <data-dir>/drvoice.sqlite3)",
    )
    parser.add_argument("--out", required=True, type=Path, help="output JSONL file")
    parser.add_argument("--data-dir", default="data", type=Path, help="the app's data folder (audio files)")
    parser.add_argument(
        "--absolute-paths",
        action="store_true",
        help="write absolute audio paths instead of data-dir relative",
    )
    args = parser.parse_args(argv)
    with Repository(args.db, args.data_dir) as repo:
        count = export_preference_pairs(repo, args.out, absolute_paths=args.absolute_paths)
    print(f"wrote {count} preference pairs to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
