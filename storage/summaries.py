"""Read-only summaries over the database: counts, win rates, preference pairs.

Functions take an open ``Session``; ``Repository.stats``, ``win_rates`` and
``iter_preference_pairs`` wrap them in read transactions.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import Comparison, Conversation, Feedback, Turn
from storage.records import ComparisonRecord, PreferencePair, Stats, TurnRecord, WinRate, to_record

PAIR_VOTES: tuple[str, ...] = ("A", "B")  # votes that make a preference pair (not tie / both_bad)


def _votes_by_label_pair(session: Session, voted_only: bool) -> list[tuple[str, str, str | None, int]]:
    query = select(Comparison.label_a, Comparison.label_b, Comparison.vote, func.count()).group_by(
        Comparison.label_a, Comparison.label_b, Comparison.vote
    )
    if voted_only:
        query = query.where(Comparison.vote.is_not(None))
    return [tuple(row) for row in session.execute(query).all()]


def compute_stats(session: Session) -> Stats:
    """Counts of conversations, turns (by status and mode), votes (overall and per label pair)."""
    by_status = dict(session.execute(select(Turn.status, func.count()).group_by(Turn.status)).all())
    by_mode = dict(session.execute(select(Turn.mode, func.count()).group_by(Turn.mode)).all())
    ratings = dict(session.execute(select(Feedback.rating, func.count()).group_by(Feedback.rating)).all())
    conversations = session.scalar(select(func.count()).select_from(Conversation)) or 0
    votes: Counter[str] = Counter()
    by_pair: dict[str, dict[str, int]] = {}
    for label_a, label_b, vote, count in _votes_by_label_pair(session, voted_only=False):
        key = vote or "pending"
        votes[key] += count
        pair = by_pair.setdefault(f"{label_a} vs {label_b}", {})
        pair[key] = pair.get(key, 0) + count
    return Stats(
        conversations=conversations,
        turns=sum(by_status.values()),
        turns_by_status=by_status,
        turns_by_mode=by_mode,
        comparisons=sum(votes.values()),
        votes=dict(votes),
        votes_by_label_pair=by_pair,
        likes=ratings.get(1, 0),
        dislikes=ratings.get(-1, 0),
    )


def compute_win_rates(session: Session) -> list[WinRate]:
    """Per pair of labels, results of the first label (alphabetically) against the second.

    A comparison of (X as A, Y as B) and one of (Y as A, X as B) count towards the same pair.
    """
    tallies: dict[tuple[str, str], Counter[str]] = {}
    for label_a, label_b, vote, count in _votes_by_label_pair(session, voted_only=True):
        label, opponent = sorted((label_a, label_b))
        flipped = (label_a, label_b) != (label, opponent)
        if vote in ("tie", "both_bad"):
            outcome = "ties" if vote == "tie" else "both_bad"
        else:
            outcome = "wins" if (vote == "A") != flipped else "losses"
        tallies.setdefault((label, opponent), Counter())[outcome] += count
    return [
        WinRate(label, opponent, t["wins"], t["losses"], t["ties"], t["both_bad"])
        for (label, opponent), t in sorted(tallies.items())
    ]


def preference_pair_ids(session: Session) -> list[str]:
    """Ids of the comparisons voted A or B, oldest vote first."""
    query = (
        select(Comparison.id)
        .where(Comparison.vote.in_(PAIR_VOTES))
        .order_by(Comparison.voted_at, Comparison.id)
    )
    return list(session.scalars(query))


def load_preference_pair(session: Session, comparison_id: str) -> PreferencePair | None:
    """The (chosen, rejected) pair of a comparison; None unless it exists and is voted A or B.

    ``history`` lists the earlier ``done`` turns of the chosen turn's conversation.
    """
    comparison = session.get(Comparison, comparison_id)
    if comparison is None or comparison.vote not in PAIR_VOTES:
        return None
    turn_a = session.get(Turn, comparison.turn_a_id)
    turn_b = session.get(Turn, comparison.turn_b_id)
    chosen, rejected = (turn_a, turn_b) if comparison.vote == "A" else (turn_b, turn_a)
    earlier = session.scalars(
        select(Turn)
        .where(
            Turn.conversation_id == chosen.conversation_id,
            Turn.turn_index < chosen.turn_index,
            Turn.status == "done",
        )
        .order_by(Turn.turn_index)
    )
    history: list[dict[str, Any]] = []
    for turn in earlier:
        user_text = turn.user_text or turn.transcript or ""
        history.append({"role": "user", "text": user_text, "audio": turn.user_audio_path})
        history.append({"role": "assistant", "text": turn.reply_text or ""})
    return PreferencePair(
        comparison=to_record(ComparisonRecord, comparison),
        chosen=to_record(TurnRecord, chosen),
        rejected=to_record(TurnRecord, rejected),
        history=history,
    )
