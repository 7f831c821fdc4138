"""Shared set-up of the app tests: one tiny checkpoint per session, a fresh database per test,
and a live server on a loopback port for the client and browser tests."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from app.config import AppSettings, Limits  # noqa: E402
from app.context import AppContext  # noqa: E402
from storage import Repository  # noqa: E402
from tests.app.tiny_checkpoint import QUESTION, REPLY, build_tiny_checkpoint  # noqa: E402

ADMIN_TOKEN = "let-me-in"
ARTIFACTS = Path(__file__).resolve().parents[1] / "_artifacts"

__all__ = ["ADMIN_TOKEN", "ARTIFACTS", "QUESTION", "REPLY", "free_port", "request_of"]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """(checkpoint dir, question wav path): the tiny overfitted checkpoint, built once."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("app-ckpt"))


@pytest.fixture(scope="session")
def engine(tiny):
    from core.engine import VoiceChatEngine

    return VoiceChatEngine.from_pretrained(tiny[0])


@pytest.fixture
def question_wav(tiny) -> str:
    return str(tiny[1])


@pytest.fixture
def make_ctx(tmp_path, engine):
    """Factory: an AppContext on the session engine (or given engines) with a fresh database."""
    made = []

    def make(engines=None, **settings) -> AppContext:
        settings.setdefault("admin_token", ADMIN_TOKEN)
        settings.setdefault("limits", Limits())
        index = len(made)
        repo = Repository(f"sqlite:///{tmp_path / f'app{index}.sqlite3'}", tmp_path / f"data{index}")
        ctx = AppContext(engines or {engine.checkpoint_id: engine}, repo, AppSettings(**settings))
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


@pytest.fixture
def ctx(make_ctx) -> AppContext:
    return make_ctx()


def request_of(session: str = "session-1") -> SimpleNamespace:
    """Stands in for ``gr.Request`` (the handlers only read ``session_hash``)."""
    return SimpleNamespace(session_hash=session)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, engine):
    """A live app on 127.0.0.1 (tiny checkpoint, own database): yields (url, ctx)."""
    from app.ui import build_app, launch

    folder = tmp_path_factory.mktemp("server")
    repo = Repository(f"sqlite:///{folder / 'app.sqlite3'}", folder / "data")
    ctx = AppContext(
        {engine.checkpoint_id: engine}, repo, AppSettings(admin_token=ADMIN_TOKEN, concurrency_limit=1)
    )
    demo = build_app(ctx)
    port = free_port()
    started = time.perf_counter()
    launch(demo, ctx, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    ctx.launch_seconds = time.perf_counter() - started
    try:
        yield f"http://127.0.0.1:{port}/", ctx
    finally:
        demo.close()
        ctx.close()
