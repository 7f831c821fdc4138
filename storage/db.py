"""Engine creation and migrations.

The database is a SQLite file under the data folder by default; any SQLAlchemy URL (PostgreSQL, ...)
can be given instead, explicitly or through ``$DRVOICE_DB_URL``.

SQLite is set up for several writers (app worker threads, a second app process, the export CLI):

- WAL journal: readers never block the writer and the writer never blocks readers.
- ``busy_timeout``: a writer waits for the lock instead of failing with "database is locked".
- Write transactions start with ``BEGIN IMMEDIATE`` (engine option ``drvoice_write``, see
  ``write_engine``), so they take the write lock up front. A deferred transaction that reads and
  then writes can fail with SQLITE_BUSY *without* waiting when another writer committed in
  between; an immediate one never does. Read transactions use a plain (deferred) ``BEGIN``.
- Foreign keys are enforced (``ON DELETE CASCADE`` from turns to comparisons and feedback).

Migrations are Alembic revisions in ``storage/migrations/versions``; the Alembic config is built
here, so no ``alembic.ini`` is needed. ``init_db`` upgrades any database to head.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, make_url, text

logger = logging.getLogger(__name__)

DB_URL_ENV = "DRVOICE_DB_URL"  # environment variable holding the database URL
DEFAULT_DB_FILENAME = "drvoice.sqlite3"  # inside the data dir when no URL is given
BUSY_TIMEOUT_MS = 30_000  # how long a SQLite writer waits for the lock before giving up
WRITE_OPTION = "drvoice_write"  # execution option: begin with BEGIN IMMEDIATE on SQLite
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def resolve_url(url: str | os.PathLike | None = None, data_dir: str | os.PathLike = "data") -> str:
    """The database URL to use.

    Args:
        url: a SQLAlchemy URL, or a plain file path (taken as a SQLite file); None falls back to
            ``$DRVOICE_DB_URL``, then to ``<data_dir>/drvoice.sqlite3``.
        data_dir: the app's data folder.

    Returns:
        A SQLAlchemy URL string.
    """
    if url is None:
        url = os.environ.get(DB_URL_ENV) or Path(data_dir) / DEFAULT_DB_FILENAME
    url = os.fspath(url)
    if "://" not in url:
        return f"sqlite:///{Path(url).resolve()}"
    return url


def make_engine(url: str, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> Engine:
    """Create an engine; for SQLite, create the file's folder and install the pragmas above.

    Args:
        url: a SQLAlchemy URL (see ``resolve_url``).
        busy_timeout_ms: SQLite only, how long a writer waits for the write lock.
    """
    parsed = make_url(url)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    in_memory = is_sqlite and parsed.database in (None, "", ":memory:")
    if is_sqlite and not in_memory:
        Path(parsed.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed)
    if is_sqlite:
        _configure_sqlite(engine, busy_timeout_ms=busy_timeout_ms, wal=not in_memory)
    return engine


def _configure_sqlite(engine: Engine, *, busy_timeout_ms: int, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, connection_record) -> None:
        # Take transaction control away from the sqlite3 module: it would BEGIN (deferred) lazily
        # before the first write only; we emit BEGIN / BEGIN IMMEDIATE ourselves in "begin".
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")  # first: the next may wait
        if wal:
            cursor.execute("PRAGMA journal_mode = WAL")  # persistent, stored in the file
            cursor.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; safe with WAL
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        immediate = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def write_engine(engine: Engine) -> Engine:
    """The same engine (same pool) whose transactions take the SQLite write lock up front."""
    return engine.execution_options(**{WRITE_OPTION: True})


def alembic_config() -> Config:
    """An Alembic config pointing at ``storage/migrations`` (no ``alembic.ini`` file needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    return config


def head_revision() -> str:
    """The newest migration revision id."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None for an empty database)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run migrations up to ``revision`` in one transaction (it rolls back on any error)."""
    _migrate(engine, revision, downgrade=False)


def downgrade(engine: Engine, revision: str) -> None:
    """Run migrations down to ``revision`` (``"base"`` drops everything)."""
    _migrate(engine, revision, downgrade=True)


def _migrate(engine: Engine, revision: str, *, downgrade: bool) -> None:
    config = alembic_config()
    is_sqlite = engine.dialect.name == "sqlite"
    with write_engine(engine).connect() as connection:
        raw = connection.connection.dbapi_connection
        if is_sqlite:
            # SQLite rebuilds a table to alter it (batch mode); with foreign keys on, dropping the
            # old `turns` would cascade-delete every comparison. The pragma only takes effect
            # outside a transaction, hence on the raw connection before BEGIN; the keys are
            # checked below before committing instead.
            raw.execute("PRAGMA foreign_keys = OFF")
        try:
            with connection.begin():
                config.attributes["connection"] = connection
                if downgrade:
                    command.downgrade(config, revision)
                else:
                    command.upgrade(config, revision)
                if is_sqlite:
                    violations = connection.execute(text("PRAGMA foreign_key_check")).fetchall()
                    if violations:
                        raise RuntimeError(f"migration broke foreign keys: {violations[:5]}")
        finally:
            if is_sqlite:
                raw.execute("PRAGMA foreign_keys = ON")


def init_db(url: str | os.PathLike | None = None, *, data_dir: str | os.PathLike = "data") -> Engine:
    """Create the engine and upgrade the database to the newest schema (safe to call every start).

    Args:
        url: see ``resolve_url``.
        data_dir: the app's data folder (holds the default SQLite file).

    Returns:
        The engine, ready for ``Repository``.
    """
    engine = make_engine(resolve_url(url, data_dir))
    before = current_revision(engine)
    upgrade(engine)
    after = current_revision(engine)
    if before != after:
        logger.info("database %s migrated %s -> %s", engine.url.render_as_string(), before, after)
    return engine
