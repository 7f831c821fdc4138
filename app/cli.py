"""Command line of ``app.py``: parse, check the checkpoint early, build, launch.

Heavy imports (torch, transformers, gradio) happen only after the arguments and the checkpoint
path were checked, so ``--help`` and a missing checkpoint answer at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from app.config import ADMIN_TOKEN_ENV, DEFAULT_CHECKPOINT, REPO_ROOT, Limits

logger = logging.getLogger("app")


def build_parser() -> argparse.ArgumentParser:
    limits = Limits()
    parser = argparse.ArgumentParser(
        prog="python app.py",
        description="DrVoice browser app: voice chat, side-by-side mode comparison, preference capture.",
        epilog=f"Admin actions (preference export, deleting data) need ${ADMIN_TOKEN_ENV}; they are "
        "disabled when it is unset. Database URL default: $DRVOICE_DB_URL, else <data-dir>/drvoice.sqlite3.",
    )
    parser.add_argument("--checkpoint", default=None,
                        help=f"checkpoint directory or Hugging Face hub id (default: {_shown(DEFAULT_CHECKPOINT)})")  # fmt: skip
    parser.add_argument("--compare-checkpoint", action="append", default=[], metavar="PATH_OR_ID",
                        help="another checkpoint to offer in the chat and compare tabs (repeatable)")  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--db", default=None, help="SQLAlchemy URL or SQLite file path of the database")
    parser.add_argument("--data-dir", default=str(REPO_ROOT / "data"),
                        help="folder for audio files and the default SQLite file (default: ./data)")  # fmt: skip
    parser.add_argument(
        "--share", action="store_true", help="also open a public gradio.live link (off by default)"
    )
    parser.add_argument("--concurrency", type=int, default=1,
                        help="generations running at once; others wait in the queue (default 1)")  # fmt: skip
    parser.add_argument("--queue-size", type=int, default=64, help="requests that may wait in the queue")
    parser.add_argument(
        "--max-upload-mb", type=float, default=limits.max_upload_mb, help="largest audio upload"
    )
    parser.add_argument("--max-audio-seconds", type=float, default=limits.max_audio_seconds,
                        help="longest recording accepted")  # fmt: skip
    parser.add_argument("--no-stream-audio", action="store_true",
                        help="send the reply audio when it is complete instead of streaming it "
                        "(automatic when ffmpeg is not installed)")  # fmt: skip
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument("--device", default="cpu", help="torch device for the model (cpu, cuda, ...)")
    return parser


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def check_checkpoint(value: str | None) -> str:
    """The checkpoint to load; exits with a readable message when the default one is missing."""
    if value is None:
        if not (DEFAULT_CHECKPOINT / "config.json").is_file():
            sys.exit(
                f"error: the default checkpoint {_shown(DEFAULT_CHECKPOINT)} is missing or incomplete "
                "(no config.json). Build it with the training suite, or pass another one: "
                "python app.py --checkpoint PATH_OR_HUB_ID"
            )
        return str(DEFAULT_CHECKPOINT)
    path = Path(value).expanduser()
    looks_local = path.exists() or value.startswith((".", "/", "~")) or value.count("/") != 1
    if looks_local and not (path / "config.json").is_file():
        sys.exit(
            f"error: {value} is not a DrVoice checkpoint directory (no config.json). "
            "Pass --checkpoint a directory written by core.checkpoint.save_pretrained, or a hub id."
        )
    return value


def main(argv: list[str] | None = None) -> None:
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    checkpoints = [check_checkpoint(args.checkpoint), *(check_checkpoint(c) for c in args.compare_checkpoint)]
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    import torch

    from app.config import AppSettings, admin_token_from_env
    from app.context import AppContext
    from app.ui import build_app, launch
    from core.checkpoint import CheckpointError

    if args.threads:
        torch.set_num_threads(args.threads)
    stream_audio = not args.no_stream_audio
    if stream_audio and shutil.which("ffmpeg") is None:
        logger.warning("ffmpeg is not installed: reply audio is sent when complete instead of streamed")
        stream_audio = False
    try:
        settings = AppSettings(
            limits=Limits(max_upload_mb=args.max_upload_mb, max_audio_seconds=args.max_audio_seconds),
            concurrency_limit=args.concurrency,
            queue_size=args.queue_size,
            stream_audio=stream_audio,
            admin_token=admin_token_from_env(),
        )
    except ValueError as error:
        sys.exit(f"error: {error}")
    try:
        ctx = AppContext.load(
            checkpoints, db_url=args.db, data_dir=args.data_dir, settings=settings, device=args.device
        )
    except CheckpointError as error:
        sys.exit(f"error: {error}")
    if settings.admin_token is None:
        logger.info("admin actions disabled (set $%s to enable export and deletion)", ADMIN_TOKEN_ENV)
    demo = build_app(ctx)
    launch(demo, ctx, host=args.host, port=args.port, share=args.share, prevent_thread_lock=True)
    logger.info("ready in %.1f s: http://%s:%d", time.perf_counter() - started, args.host, args.port)
    try:
        demo.block_thread()
    finally:
        ctx.close()
