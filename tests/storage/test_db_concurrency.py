"""Several threads and processes writing into one SQLite file at once.

4 threads (sharing one Repository, like Gradio worker threads) and 2 processes (their own
Repository, like a second app instance) each write TURNS_PER_WRITER pairs of turns, a comparison,
a vote and a feedback per pair, all starting together. Every row must arrive and no writer may see
"database is locked".
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from storage import Repository

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
THREADS = 4
PROCESSES = 2
PAIRS_PER_WRITER = 8
SHARED_USER_AUDIO = b"RIFF" + b"same question" * 10  # every writer stores it: one file on disk


def write_rows(repo: Repository, writer: str) -> None:
    """One writer's workload: conversations, turns, a comparison, a vote and feedback per pair."""
    conversations = [repo.create_conversation(f"ckpt-{writer}", session_id=writer) for _ in range(2)]
    for i in range(PAIRS_PER_WRITER):
        turns = []
        for side, conversation in zip("ab", conversations, strict=True):
            turn = repo.start_turn(
                conversation, "S2M", "sys", None, SHARED_USER_AUDIO, None, {"seed": i, "writer": writer}
            )
            repo.finish_turn(
                turn,
                reply_text=f"{writer} {i} {side}",
                speech_tokens=[i, len(writer)],
                reply_audio=f"RIFF {writer} {i} {side}".encode(),
                timings={"audio_seconds": 1.0},
            )
            turns.append(turn)
        comparison = repo.create_comparison(*turns, "a", "b", session_id=writer)
        repo.vote(comparison, "A" if i % 2 else "B")
        repo.add_feedback(turns[0], 1)


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)


def process_main(url: str, data_dir: str, writer: str, sync_dir: str) -> None:
    """Entry point of a writer process: get ready, wait for the start signal, write."""
    repo = Repository(url, data_dir)
    (Path(sync_dir) / f"ready-{writer}").touch()
    _wait_for(Path(sync_dir) / "go")
    write_rows(repo, writer)
    repo.close()


def test_threads_and_processes_write_at_once(db_url: str, data_dir: Path, tmp_path: Path) -> None:
    repo = Repository(db_url, data_dir)  # creates and migrates the database first
    sync_dir = tmp_path / "sync"
    sync_dir.mkdir()
    process_writers = [f"proc{i}" for i in range(PROCESSES)]
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import sys; sys.path.insert(0, {str(HERE)!r}); import test_db_concurrency as t; "
                f"t.process_main({db_url!r}, {str(data_dir)!r}, {writer!r}, {str(sync_dir)!r})",
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for writer in process_writers
    ]
    errors: list[BaseException] = []

    def thread_main(writer: str) -> None:
        _wait_for(sync_dir / "go")
        try:
            write_rows(repo, writer)
        except BaseException as error:  # reported below
            errors.append(error)

    thread_writers = [f"thread{i}" for i in range(THREADS)]
    threads = [threading.Thread(target=thread_main, args=(w,)) for w in thread_writers]
    for thread in threads:
        thread.start()
    for writer in process_writers:
        _wait_for(sync_dir / f"ready-{writer}")
    (sync_dir / "go").touch()
    for thread in threads:
        thread.join(timeout=120)
    outputs = [p.communicate(timeout=120) for p in processes]

    assert not errors, errors
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
        assert "locked" not in stderr

    writers = thread_writers + process_writers
    n_turns = len(writers) * PAIRS_PER_WRITER * 2
    stats = repo.stats()
    assert stats.conversations == len(writers) * 2
    assert stats.turns_by_status == {"done": n_turns}
    assert stats.comparisons == len(writers) * PAIRS_PER_WRITER
    assert stats.votes == {
        "A": len(writers) * PAIRS_PER_WRITER // 2,
        "B": len(writers) * PAIRS_PER_WRITER // 2,
    }
    assert stats.likes == len(writers) * PAIRS_PER_WRITER
    for conversation in repo.list_conversations(limit=100):
        history = repo.history(conversation.id)
        assert [t.turn_index for t in history] == list(range(PAIRS_PER_WRITER))
        assert {t.sampling["writer"] for t in history} == {conversation.session_id}
    assert len(list(repo.iter_preference_pairs())) == len(writers) * PAIRS_PER_WRITER
    # One shared user recording plus one reply file per turn.
    assert len(repo.audio.files()) == 1 + n_turns
    repo.close()
