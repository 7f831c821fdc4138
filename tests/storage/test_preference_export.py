"""Export of votes as DPO preference pairs (JSONL), as a function and as a CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from storage import Repository
from storage.export import export_preference_pairs

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def voted(repo: Repository, wav) -> dict[str, dict[str, str]]:
    """Four comparisons voted A, B, tie and both_bad, each after one earlier turn per side.

    Side A runs in mode S2M on checkpoint "ck-a", side B in STC on "ck-b"; each side has its own
    conversation whose first turn ("earlier") becomes the pair's history.
    """
    setups = {}
    for vote in ("A", "B", "tie", "both_bad"):
        question = wav(frequency=300 + len(vote))
        sides = {}
        for side, mode, checkpoint in (("a", "S2M", "ck-a"), ("b", "STC", "ck-b")):
            conversation = repo.create_conversation(checkpoint, session_id="s1")
            earlier = repo.start_turn(conversation, mode, f"sys {mode}", user_text="earlier question")
            repo.finish_turn(earlier, reply_text=f"earlier answer {side}")
            turn = repo.start_turn(conversation, mode, f"sys {mode}", None, question, None, {"seed": 3})
            repo.finish_turn(
                turn,
                reply_text=f"{vote} reply {side}",
                transcript="the question" if mode == "STC" else None,
                draft_text="a draft" if mode == "STC" else None,
                speech_tokens=[len(vote), 1 if side == "a" else 2],
                reply_audio=wav(frequency=400 + 7 * len(vote) + (0 if side == "a" else 50)),
            )
            sides[side] = turn
        comparison = repo.create_comparison(sides["a"], sides["b"], "S2M", "STC")
        repo.vote(comparison, vote, comment=f"comment {vote}")
        setups[vote] = {"comparison": comparison, **sides}
    return setups


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_export_writes_pairs_for_a_and_b_only(repo: Repository, voted, tmp_path: Path) -> None:
    out = tmp_path / "out" / "pairs.jsonl"
    assert export_preference_pairs(repo, out) == 2
    records = {r["provenance"]["vote"]: r for r in _read_jsonl(out)}
    assert set(records) == {"A", "B"}  # tie and both_bad give no pair

    for vote, winner, loser in (("A", "a", "b"), ("B", "b", "a")):
        record = records[vote]
        chosen, rejected = repo.get_turn(voted[vote][winner]), repo.get_turn(voted[vote][loser])
        assert record["id"] == voted[vote]["comparison"]
        assert record["chosen"] == {
            "turn_id": chosen.id,
            "mode": chosen.mode,
            "system_prompt": chosen.system_prompt,
            "text": f"{vote} reply {winner}",
            "transcript": chosen.transcript,
            "draft_text": chosen.draft_text,
            "speech_tokens": [1, 1 if winner == "a" else 2],
            "audio": chosen.reply_audio_path,
        }
        assert record["rejected"]["turn_id"] == rejected.id
        assert record["rejected"]["speech_tokens"] == [1, 1 if loser == "a" else 2]
        for side in ("chosen", "rejected"):
            audio = record[side]["audio"]
            assert audio.startswith("audio/") and (repo.data_dir / audio).is_file()
        assert record["prompt"] == {
            "user_text": None,
            "user_audio": chosen.user_audio_path,
            "history": [
                {"role": "user", "text": "earlier question", "audio": None},
                {"role": "assistant", "text": f"earlier answer {winner}"},
            ],
        }
        provenance = record["provenance"]
        assert provenance["source"] == "drvoice-app" and provenance["version"] == 1
        assert provenance["comparison_id"] == record["id"]
        assert (provenance["label_a"], provenance["label_b"]) == ("S2M", "STC")
        assert provenance["checkpoint_ids"] == {
            "chosen": "ck-a" if winner == "a" else "ck-b",
            "rejected": "ck-a" if loser == "a" else "ck-b",
        }
        assert provenance["sampling"] == {"chosen": {"seed": 3}, "rejected": {"seed": 3}}
        assert provenance["comment"] == f"comment {vote}"
        assert provenance["voted_at"] == repo.get_comparison(record["id"]).voted_at.isoformat()
    assert records["B"]["chosen"]["mode"] == "STC" and records["B"]["chosen"]["transcript"] == "the question"


def test_export_absolute_paths(repo: Repository, voted, tmp_path: Path) -> None:
    out = tmp_path / "pairs.jsonl"
    export_preference_pairs(repo, out, absolute_paths=True)
    for record in _read_jsonl(out):
        for path in (record["prompt"]["user_audio"], record["chosen"]["audio"], record["rejected"]["audio"]):
            assert Path(path).is_absolute() and Path(path).is_file()


def test_export_cli(repo: Repository, voted, db_url: str, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli" / "pairs.jsonl"
    command = [sys.executable, "-m", "storage.export", "--db", db_url, "--out", str(out)]
    result = subprocess.run(
        [*command, "--data-dir", str(data_dir)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote 2 preference pairs to {out}" in result.stdout
    records = _read_jsonl(out)
    assert sorted(r["provenance"]["vote"] for r in records) == ["A", "B"]
    assert records == _read_jsonl_from(repo, tmp_path)

    result = subprocess.run(
        [*command, "--data-dir", str(data_dir), "--absolute-paths"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert all(Path(r["chosen"]["audio"]).is_absolute() for r in _read_jsonl(out))


def _read_jsonl_from(repo: Repository, tmp_path: Path) -> list[dict]:
    reference = tmp_path / "reference.jsonl"
    export_preference_pairs(repo, reference)
    return _read_jsonl(reference)


def test_export_cli_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "storage.export", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    for flag in ("--db", "--out", "--data-dir", "--absolute-paths"):
        assert flag in result.stdout


def test_export_with_no_votes(repo: Repository, tmp_path: Path) -> None:
    out = tmp_path / "empty.jsonl"
    assert export_preference_pairs(repo, out) == 0
    assert out.read_text() == ""


def test_storage_never_imports_torch_or_core() -> None:
    code = (
        "import sys, storage, storage.export, storage.db, storage.repository\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'core', 'numpy'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
