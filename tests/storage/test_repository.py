"""Repository round trips, turn life cycle, validation, votes, summaries and deletion."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from storage import NotFoundError, Repository, TurnStateError, VoteRefusedError
from storage.db import DB_URL_ENV, DEFAULT_DB_FILENAME
from storage.models import utc_now

REPO_ROOT = Path(__file__).resolve().parents[2]
SYSTEM = "You are a helpful assistant and asked to generate both text and speech tokens at the same time."


def test_conversation_round_trip(repo: Repository) -> None:
    first = repo.create_conversation("ckpt-1", session_id="browser-1", title="greetings")
    second = repo.create_conversation("ckpt-2")
    record = repo.get_conversation(first)
    assert (record.checkpoint_id, record.session_id, record.title) == ("ckpt-1", "browser-1", "greetings")
    assert record.created_at.tzinfo is not None
    assert {c.id for c in repo.list_conversations()} == {first, second}
    assert [c.id for c in repo.list_conversations(session_id="browser-1")] == [first]
    with pytest.raises(NotFoundError):
        repo.get_conversation("missing")


def test_turn_round_trip(repo: Repository, wav) -> None:
    conversation = repo.create_conversation("ckpt-1")
    user_wav, reply_wav = wav(frequency=300), wav(frequency=500)
    sampling = {"temperature": 0.8, "top_p": 0.9, "top_k": 50, "repetition_penalty": 1.1, "seed": 7}
    turn_id = repo.start_turn(conversation, "STC", SYSTEM, None, user_wav, None, sampling)

    running = repo.get_turn(turn_id)
    assert running.status == "running" and running.finished_at is None
    assert running.checkpoint_id == "ckpt-1"  # inherited from the conversation
    assert running.sampling == sampling and running.turn_index == 0
    assert repo.audio_path(running.user_audio_path).read_bytes() == user_wav

    timings = {
        "time_to_first_text_ms": 120.5,
        "time_to_first_audio_ms": 310.0,
        "real_time_factor": 0.25,
        "audio_seconds": 2.4,
    }
    finished = repo.finish_turn(
        turn_id,
        reply_text="It is sunny.",
        transcript="what is the weather",
        draft_text="It is sunny today.",
        speech_tokens=[5, 0, 6560, 17],
        reply_audio=reply_wav,
        timings=timings,
    )
    stored = repo.get_turn(turn_id)
    assert stored == finished
    assert stored.status == "done" and stored.finished_at >= stored.created_at
    assert (stored.reply_text, stored.transcript, stored.draft_text) == (
        "It is sunny.",
        "what is the weather",
        "It is sunny today.",
    )
    assert stored.speech_tokens == [5, 0, 6560, 17]
    assert repo.audio_path(stored.reply_audio_path).read_bytes() == reply_wav
    assert stored.reply_audio_path.startswith("audio/") and stored.reply_audio_path.endswith(".wav")
    for name, value in timings.items():
        assert getattr(stored, name) == value
    assert repo.list_turns() == [stored]


def test_user_audio_from_file_keeps_suffix(repo: Repository, tmp_path: Path, wav) -> None:
    source = tmp_path / "upload.FLAC"
    source.write_bytes(wav())
    conversation = repo.create_conversation("c")
    turn = repo.get_turn(repo.start_turn(conversation, "S2T", "p", user_audio=source))
    assert turn.user_audio_path.endswith(".flac")


def test_history_orders_turns_and_indexes_them(repo: Repository, done_turn) -> None:
    conversation = repo.create_conversation("ckpt")
    other = repo.create_conversation("ckpt")
    ids = [done_turn(conversation, reply=f"reply {i}") for i in range(3)]
    done_turn(other)
    history = repo.history(conversation)
    assert [t.id for t in history] == ids
    assert [t.turn_index for t in history] == [0, 1, 2]
    assert [t.reply_text for t in history] == ["reply 0", "reply 1", "reply 2"]
    assert len(repo.list_turns(limit=2)) == 2
    assert len(repo.list_turns(limit=10, offset=3)) == 1
    assert len(repo.list_turns(mode="S2M", status="done")) == 4


def test_cancel_and_fail_keep_partial_results(repo: Repository) -> None:
    conversation = repo.create_conversation("ckpt")
    cancelled = repo.start_turn(conversation, "S2M", SYSTEM, "tell me a story")
    repo.cancel_turn(cancelled, reply_text="Once upon", speech_tokens=[3, 4], timings={"audio_seconds": 0.2})
    record = repo.get_turn(cancelled)
    assert (record.status, record.reply_text, record.speech_tokens) == ("cancelled", "Once upon", [3, 4])
    assert record.finished_at is not None

    failed = repo.start_turn(conversation, "T2T", "p", "hi")
    repo.fail_turn(failed, "CUDA out of memory")
    record = repo.get_turn(failed)
    assert (record.status, record.error_message) == ("error", "CUDA out of memory")

    with pytest.raises(TurnStateError, match="not 'running'"):
        repo.finish_turn(failed, reply_text="late")
    with pytest.raises(TurnStateError):
        repo.fail_turn(cancelled, "again")


def test_running_row_survives_a_crash(db_url: str, data_dir: Path) -> None:
    """start_turn commits before generation: a process killed mid-reply leaves a 'running' row."""
    script = textwrap.dedent(
        f"""
        import os
        from storage import Repository
        repo = Repository({db_url!r}, {str(data_dir)!r})
        conversation = repo.create_conversation("ckpt")
        print(repo.start_turn(conversation, "T2M", "p", "hi", sampling={{"seed": 1}}), flush=True)
        os._exit(1)  # crash during generation: no finish, no cleanup
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stderr
    turn_id = result.stdout.strip()
    with Repository(db_url, data_dir) as repo:
        assert repo.get_turn(turn_id).status == "running"
        assert repo.list_turns(status="running")[0].id == turn_id
        # A restarted app marks it: only turns created before the given time are touched.
        assert repo.fail_interrupted_turns(started_before=utc_now() - timedelta(hours=1)) == 0
        assert repo.fail_interrupted_turns() == 1
        record = repo.get_turn(turn_id)
        assert record.status == "error" and "interrupted" in record.error_message


def test_invalid_values_are_rejected_before_writing(repo: Repository) -> None:
    conversation = repo.create_conversation("ckpt")
    with pytest.raises(ValueError, match="mode must be one of"):
        repo.start_turn(conversation, "S2S", "p", "hi")
    with pytest.raises(ValueError, match="JSON"):
        repo.start_turn(conversation, "T2T", "p", "hi", sampling={"temperature": object()})
    with pytest.raises(NotFoundError):
        repo.start_turn("no-such-conversation", "T2T", "p", "hi")
    assert repo.list_turns() == []

    turn = repo.start_turn(conversation, "T2T", "p", "hi")
    with pytest.raises(ValueError, match="unknown timing keys"):
        repo.finish_turn(turn, reply_text="x", timings={"ttft": 1.0})
    with pytest.raises(ValueError, match="non-negative"):
        repo.finish_turn(turn, reply_text="x", timings={"audio_seconds": float("nan")})
    with pytest.raises(ValueError, match="speech tokens"):
        repo.finish_turn(turn, reply_text="x", speech_tokens=[1, -2])
    with pytest.raises(ValueError, match="speech tokens"):
        repo.finish_turn(turn, reply_text="x", speech_tokens=[1.5])
    with pytest.raises(ValueError, match="status"):
        repo.finish_turn(turn, reply_text="x", status="error")
    assert repo.get_turn(turn).status == "running"

    repo.finish_turn(turn, reply_text="x")
    with pytest.raises(ValueError, match="rating"):
        repo.add_feedback(turn, 5)
    with pytest.raises(ValueError, match="rating"):
        repo.add_feedback(turn, True)


def test_votes(repo: Repository, done_turn) -> None:
    conversation_a, conversation_b = repo.create_conversation("ckpt"), repo.create_conversation("ckpt")
    turn_a = done_turn(conversation_a)
    turn_b = repo.start_turn(conversation_b, "S2T", "p", "hi")
    comparison = repo.create_comparison(turn_a, turn_b, "S2M", "S2T", blinded=False, session_id="s1")
    record = repo.get_comparison(comparison)
    assert (record.turn_a_id, record.turn_b_id, record.label_a, record.label_b) == (
        turn_a,
        turn_b,
        "S2M",
        "S2T",
    )
    assert (record.blinded, record.vote, record.voted_at, record.session_id) == (False, None, None, "s1")

    with pytest.raises(VoteRefusedError, match="'running'"):
        repo.vote(comparison, "A")  # side B still generating
    repo.finish_turn(turn_b, reply_text="hello")
    with pytest.raises(ValueError, match="vote must be one of"):
        repo.vote(comparison, "C")
    with pytest.raises(ValueError):
        repo.vote(comparison, "both bad")
    assert repo.get_comparison(comparison).vote is None

    voted = repo.vote(comparison, "B", comment="clearer voice")
    assert (voted.vote, voted.comment) == ("B", "clearer voice") and voted.voted_at is not None
    assert repo.get_comparison(comparison) == voted
    with pytest.raises(VoteRefusedError, match="already has vote 'B'"):
        repo.vote(comparison, "A")
    changed = repo.vote(comparison, "tie", overwrite=True)
    assert changed.vote == "tie" and changed.comment is None
    assert repo.list_comparisons() == [changed]

    with pytest.raises(ValueError, match="two different turns"):
        repo.create_comparison(turn_a, turn_a, "x", "y")
    with pytest.raises(NotFoundError):
        repo.create_comparison(turn_a, "missing", "x", "y")
    with pytest.raises(NotFoundError):
        repo.vote("missing", "A")


def test_feedback_round_trip(repo: Repository, done_turn) -> None:
    turn = done_turn(repo.create_conversation("ckpt"))
    like = repo.add_feedback(turn, 1, "natural voice")
    repo.add_feedback(turn, -1)
    records = repo.list_feedback(turn)
    assert [(f.id, f.rating, f.comment) for f in records][0] == (like, 1, "natural voice")
    assert [f.rating for f in records] == [1, -1] and records[1].comment is None
    with pytest.raises(NotFoundError):
        repo.add_feedback("missing", 1)


def test_stats_and_win_rates(repo: Repository, done_turn) -> None:
    """Votes between labels X and Y, in both A/B orders.

    (X as A, Y as B): A, A, B, tie          -> X: 2 wins, 1 loss, 1 tie
    (Y as A, X as B): A, B, both_bad, None  -> X: 1 win, 1 loss, 1 both_bad; one pending
    X in total: 3 wins, 2 losses, 1 tie, 1 both_bad -> win rate (3 + 0.5) / 6 = 0.58333
    """
    conversation = repo.create_conversation("ckpt")
    plan = [("X", "Y", v) for v in ("A", "A", "B", "tie")] + [
        ("Y", "X", v) for v in ("A", "B", "both_bad", None)
    ]
    for i, (label_a, label_b, vote) in enumerate(plan):
        comparison = repo.create_comparison(
            done_turn(conversation, reply=f"a{i}"), done_turn(conversation, reply=f"b{i}"), label_a, label_b
        )
        if vote is not None:
            repo.vote(comparison, vote)
    running = repo.start_turn(conversation, "T2T", "p", "hi")
    repo.fail_turn(repo.start_turn(conversation, "SAC", "p", "hi"), "boom")
    turn = repo.get_turn(running)
    repo.add_feedback(turn.id, 1)
    repo.add_feedback(turn.id, -1)
    repo.add_feedback(turn.id, -1)

    stats = repo.stats()
    assert stats.conversations == 1 and stats.turns == 18
    assert stats.turns_by_status == {"done": 16, "running": 1, "error": 1}
    assert stats.turns_by_mode == {"S2M": 16, "T2T": 1, "SAC": 1}
    assert stats.comparisons == 8
    assert stats.votes == {"A": 3, "B": 2, "tie": 1, "both_bad": 1, "pending": 1}
    assert stats.votes_by_label_pair == {
        "X vs Y": {"A": 2, "B": 1, "tie": 1},
        "Y vs X": {"A": 1, "B": 1, "both_bad": 1, "pending": 1},
    }
    assert (stats.likes, stats.dislikes) == (1, 2)

    [rate] = repo.win_rates()
    assert (rate.label, rate.opponent) == ("X", "Y")
    assert (rate.wins, rate.losses, rate.ties, rate.both_bad) == (3, 2, 1, 1)
    assert rate.win_rate == pytest.approx(3.5 / 6)


def test_delete_turn_cascades_and_keeps_shared_audio(repo: Repository, wav) -> None:
    conversation = repo.create_conversation("ckpt")
    shared = wav(frequency=100)
    turns = []
    for i in range(2):
        turn = repo.start_turn(conversation, "S2M", "p", user_audio=shared)
        repo.finish_turn(
            turn, reply_text=f"r{i}", speech_tokens=[i], reply_audio=wav(frequency=200 + 100 * i)
        )
        turns.append(repo.get_turn(turn))
    first, second = turns
    assert first.user_audio_path == second.user_audio_path  # deduplicated
    comparison = repo.create_comparison(first.id, second.id, "x", "y")
    repo.add_feedback(first.id, 1)

    repo.delete_turn(first.id)
    with pytest.raises(NotFoundError):
        repo.get_turn(first.id)
    with pytest.raises(NotFoundError):
        repo.get_comparison(comparison)
    assert repo.list_feedback(first.id) == []
    assert not (repo.data_dir / first.reply_audio_path).exists()  # only this turn used it
    assert (repo.data_dir / first.user_audio_path).exists()  # still used by the second turn
    assert repo.get_turn(second.id).reply_text == "r1"

    repo.delete_conversation(conversation)
    assert repo.list_turns() == [] and repo.audio.files() == []
    with pytest.raises(NotFoundError):
        repo.delete_turn(first.id)


def test_delete_all(repo: Repository, done_turn) -> None:
    conversation = repo.create_conversation("ckpt")
    a, b = done_turn(conversation, reply="a"), done_turn(conversation, reply="b")
    repo.vote(repo.create_comparison(a, b, "x", "y"), "A")
    repo.add_feedback(a, -1)
    assert repo.delete_all() == {"feedback": 1, "comparisons": 1, "turns": 2, "conversations": 1}
    assert repo.stats().turns == 0 and repo.audio.files() == []


def test_url_from_environment_and_default_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DB_URL_ENV, f"sqlite:///{tmp_path / 'from_env.db'}")
    with Repository(data_dir=tmp_path / "d1") as repo:
        repo.create_conversation("ckpt")
    assert (tmp_path / "from_env.db").exists()

    monkeypatch.delenv(DB_URL_ENV)
    with Repository(data_dir=tmp_path / "d2") as repo:
        repo.create_conversation("ckpt")
    assert (tmp_path / "d2" / DEFAULT_DB_FILENAME).exists()

    with Repository(tmp_path / "plain-path.sqlite3", tmp_path / "d3") as repo:  # a file path works too
        repo.create_conversation("ckpt")
    assert (tmp_path / "plain-path.sqlite3").exists()
