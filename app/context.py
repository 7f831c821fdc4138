"""What every callback shares: the loaded engines, the repository, the settings and cancel flags.

One ``AppContext`` per running app. Callbacks keep per-user data in ``gr.State`` (see
``app/handlers.py``); the context only holds things that are the same for every user.
"""

from __future__ import annotations

import hmac
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from app.config import ADMIN_TOKEN_ENV, AppSettings
from core.checkpoint import CheckpointError
from core.engine import VoiceChatEngine
from storage import Repository

logger = logging.getLogger(__name__)


class UserError(ValueError):
    """A request the app refuses; ``str(error)`` is shown to the user as is."""


class CancelFlags:
    """Stop buttons: one ``threading.Event`` per (browser session, tab).

    ``threading.Event`` cannot live in ``gr.State`` (state values are deep-copied per session), so
    the flags are kept here, keyed by Gradio's session hash.
    """

    def __init__(self) -> None:
        self._flags: dict[tuple[str, str], threading.Event] = {}
        self._lock = threading.Lock()

    def new(self, session: str, scope: str) -> threading.Event:
        """A fresh flag for a generation that starts now; an older one of the same key is set."""
        flag = threading.Event()
        with self._lock:
            old = self._flags.get((session, scope))
            self._flags[(session, scope)] = flag
        if old is not None:
            old.set()  # a new turn in the same tab replaces a still-running one
        return flag

    def cancel(self, session: str, scope: str) -> bool:
        """Sets the flag of (session, scope); returns whether there was one."""
        with self._lock:
            flag = self._flags.get((session, scope))
        if flag is None:
            return False
        flag.set()
        return True

    def release(self, session: str, scope: str, flag: threading.Event) -> None:
        """Forget the flag once its generation ended (unless a newer one replaced it)."""
        with self._lock:
            if self._flags.get((session, scope)) is flag:
                del self._flags[(session, scope)]


class AppContext:
    """Engines by checkpoint id, the repository and the settings.

    Args:
        engines: checkpoint id -> engine; the first is the default.
        repository: where turns, comparisons and votes go.
        settings: limits, concurrency, admin token.
    """

    def __init__(
        self, engines: Mapping[str, VoiceChatEngine], repository: Repository, settings: AppSettings
    ) -> None:
        if not engines:
            raise ValueError("the app needs at least one checkpoint")
        self.engines = dict(engines)
        self.repo = repository
        self.settings = settings
        self.cancels = CancelFlags()
        # Reply audio shown in the chat history is written here, then copied by Gradio to its cache.
        self.media_dir = Path(tempfile.mkdtemp(prefix="drvoice-app-"))

    @classmethod
    def load(
        cls,
        checkpoints: Sequence[str],
        *,
        db_url: str | None = None,
        data_dir: str | Path = "data",
        settings: AppSettings | None = None,
        device: str = "cpu",
    ) -> AppContext:
        """Loads the checkpoints (each answers one made-up request: `VoiceChatEngine.warm_up`) and
        opens (and migrates) the database.

        Turns left ``running`` by an earlier process that stopped are marked as errors.
        """
        engines: dict[str, VoiceChatEngine] = {}
        for path in checkpoints:
            engine = VoiceChatEngine.from_pretrained(path, device=device)
            name, n = engine.checkpoint_id, 2
            while name in engines:  # two directories with the same name
                name, n = f"{engine.checkpoint_id}#{n}", n + 1
            engine.checkpoint_id = name
            engines[name] = engine
            took = time.perf_counter()
            try:
                engine.warm_up()  # so that the first user's reply is as fast as the next ones
            except Exception as exc:  # a checkpoint that cannot answer is refused at start, not per turn
                raise CheckpointError(
                    f"{path} loaded, but it could not answer a first made-up request: {type(exc).__name__}: {exc}"
                ) from exc
            logger.info(
                "loaded checkpoint %s from %s (warmed up in %.2f s)", name, path, time.perf_counter() - took
            )
        repository = Repository(db_url, data_dir)
        interrupted = repository.fail_interrupted_turns()
        if interrupted:
            logger.warning("marked %d turns left running by an earlier process as errors", interrupted)
        return cls(engines, repository, settings or AppSettings())

    @property
    def checkpoints(self) -> list[str]:
        return list(self.engines)

    @property
    def default_checkpoint(self) -> str:
        return next(iter(self.engines))

    def engine(self, checkpoint: str | None) -> VoiceChatEngine:
        """The engine of ``checkpoint`` (None or "": the default)."""
        name = checkpoint or self.default_checkpoint
        if name not in self.engines:
            raise UserError(f"Unknown checkpoint {name!r}; this app serves: {', '.join(self.engines)}.")
        return self.engines[name]

    @property
    def admin_enabled(self) -> bool:
        return self.settings.admin_token is not None

    def check_admin(self, token: str | None) -> None:
        """Raises ``UserError`` unless ``token`` is the admin token."""
        expected = self.settings.admin_token
        if expected is None:
            raise UserError(f"Admin actions are disabled: start the app with ${ADMIN_TOKEN_ENV} set.")
        if not hmac.compare_digest((token or "").encode(), expected.encode()):
            raise UserError("Wrong admin token.")

    def close(self) -> None:
        self.repo.close()
        shutil.rmtree(self.media_dir, ignore_errors=True)
