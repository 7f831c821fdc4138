"""Migrations: empty database -> head, 0001 database with rows -> head without loss, models agree."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import OperationalError

from storage import Repository
from storage.db import current_revision, downgrade, head_revision, make_engine, upgrade
from storage.models import Base

TABLES = {"conversations", "turns", "comparisons", "feedback", "alembic_version"}


def _columns(engine, table: str) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns(table)}


def test_empty_database_to_head(db_url: str) -> None:
    engine = make_engine(db_url)
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == head_revision() == "0002"
    assert set(inspect(engine).get_table_names()) == TABLES
    upgrade(engine)  # idempotent
    assert current_revision(engine) == "0002"
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_models_match_migrations(db_url: str) -> None:
    """Autogenerate finds nothing to change between the head schema and storage.models."""
    engine = make_engine(db_url)
    upgrade(engine)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
    engine.dispose()


def _insert_0001_rows(engine) -> None:
    """Rows as the 0001-era app wrote them (plain SQL, independent of today's models)."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO conversations (id, created_at, checkpoint_id, session_id, title) "
                "VALUES ('c1', '2024-05-01 12:00:00.000000', 'ckpt-old', 's1', 'old chat')"
            )
        )
        for turn_id, index, reply, tokens in (("t1", 0, "first", "[1, 2, 3]"), ("t2", 1, "second", "[4, 5]")):
            connection.execute(
                text(
                    "INSERT INTO turns (id, conversation_id, turn_index, mode, system_prompt, user_text, "
                    "user_audio_path, transcript, draft_text, reply_text, speech_tokens, reply_audio_path, "
                    "checkpoint_id, sampling, time_to_first_text_ms, time_to_first_audio_ms, "
                    "real_time_factor, audio_seconds, status, created_at, finished_at) VALUES "
                    "(:id, 'c1', :index, 'S2M', 'sys', 'hello', 'audio/aa/aa.wav', NULL, NULL, :reply, "
                    ":tokens, 'audio/bb/bb.wav', 'ckpt-old', '{\"temperature\": 0.7}', 100.0, 250.0, 0.3, "
                    "1.5, 'done', '2024-05-01 12:00:01.000000', '2024-05-01 12:00:02.000000')"
                ),
                {"id": turn_id, "index": index, "reply": reply, "tokens": tokens},
            )
        connection.execute(
            text(
                "INSERT INTO comparisons (id, turn_a_id, turn_b_id, label_a, label_b, blinded, vote, "
                "voted_at, created_at, session_id) VALUES ('k1', 't1', 't2', 'S2M', 'STC', 1, 'A', "
                "'2024-05-01 12:01:00.000000', '2024-05-01 12:00:30.000000', 's1')"
            )
        )


def test_upgrade_from_0001_keeps_rows(db_url: str, data_dir: Path) -> None:
    engine = make_engine(db_url)
    upgrade(engine, "0001")
    assert current_revision(engine) == "0001"
    assert "feedback" not in inspect(engine).get_table_names()
    assert "comment" not in _columns(engine, "comparisons")
    _insert_0001_rows(engine)
    engine.dispose()

    with Repository(db_url, data_dir) as repo:  # upgrades on open
        assert current_revision(repo.engine) == "0002"
        assert "feedback" in inspect(repo.engine).get_table_names()
        assert "comment" in _columns(repo.engine, "comparisons")
        assert "error_message" in _columns(repo.engine, "turns")

        conversation = repo.get_conversation("c1")
        assert (conversation.checkpoint_id, conversation.session_id, conversation.title) == (
            "ckpt-old",
            "s1",
            "old chat",
        )
        assert conversation.created_at.isoformat() == "2024-05-01T12:00:00+00:00"
        first, second = repo.history("c1")
        assert (first.id, first.reply_text, first.speech_tokens) == ("t1", "first", [1, 2, 3])
        assert (second.id, second.reply_text, second.speech_tokens) == ("t2", "second", [4, 5])
        assert first.sampling == {"temperature": 0.7} and first.status == "done"
        assert (first.time_to_first_text_ms, first.real_time_factor, first.audio_seconds) == (100.0, 0.3, 1.5)
        assert first.user_audio_path == "audio/aa/aa.wav" and first.error_message is None
        comparison = repo.get_comparison("k1")
        assert (comparison.vote, comparison.comment, comparison.label_b) == ("A", None, "STC")

        # New features work on the old rows.
        repo.add_feedback("t1", 1, "still here")
        assert repo.list_feedback("t1")[0].comment == "still here"
        assert repo.vote("k1", "B", comment="changed my mind", overwrite=True).comment == "changed my mind"
        turn = repo.start_turn("c1", "T2T", "sys", "again")
        assert repo.get_turn(turn).turn_index == 2
        [pair] = repo.iter_preference_pairs()
        assert (pair.chosen.id, pair.rejected.id) == ("t2", "t1")
        assert pair.history == [
            {"role": "user", "text": "hello", "audio": "audio/aa/aa.wav"},
            {"role": "assistant", "text": "first"},
        ]


def test_downgrade_to_0001_and_back_keeps_rows(repo: Repository, done_turn) -> None:
    conversation = repo.create_conversation("ckpt")
    a, b = done_turn(conversation, reply="a"), done_turn(conversation, reply="b")
    comparison = repo.create_comparison(a, b, "x", "y")
    repo.vote(comparison, "A", comment="gone after downgrade")
    repo.add_feedback(a, 1)

    downgrade(repo.engine, "0001")
    assert current_revision(repo.engine) == "0001"
    assert "feedback" not in inspect(repo.engine).get_table_names()
    with repo.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM turns").scalar() == 2
        assert connection.exec_driver_sql("SELECT vote FROM comparisons").scalar() == "A"

    upgrade(repo.engine)
    assert repo.get_comparison(comparison).vote == "A"
    assert repo.get_comparison(comparison).comment is None
    assert [t.reply_text for t in repo.history(conversation)] == ["a", "b"]


def test_failed_migration_rolls_back_completely(db_url: str) -> None:
    """Revision 0002 adds columns, then creates `feedback`; if the latter fails, nothing stays."""
    engine = make_engine(db_url)
    upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE feedback (id TEXT)")  # in the way of 0002
    with pytest.raises(OperationalError, match="already exists"):
        upgrade(engine)
    assert current_revision(engine) == "0001"
    assert "comment" not in _columns(engine, "comparisons")
    assert "error_message" not in _columns(engine, "turns")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # restored
    engine.dispose()
