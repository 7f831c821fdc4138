"""Persistence for the DrVoice app: conversations, turns (with generated speech tokens), A/B
comparisons, votes and feedback; export of DPO preference pairs.

Never imports torch or ``core/`` (DESIGN §1): the app and the export CLI stay light.

    from storage import Repository
    repo = Repository(data_dir="data")            # SQLite file data/drvoice.sqlite3, migrated
    conversation_id = repo.create_conversation("demo")
    turn_id = repo.start_turn(conversation_id, "T2M", system_prompt, user_text="hi", sampling={...})
    repo.finish_turn(turn_id, reply_text="hello", speech_tokens=[...], reply_audio=wav_bytes)
"""

from storage.audio_store import AudioStore
from storage.db import DB_URL_ENV, head_revision, init_db, make_engine, resolve_url
from storage.models import MODES, RATINGS, TURN_STATUSES, VOTES
from storage.records import (
    ComparisonRecord,
    ConversationRecord,
    FeedbackRecord,
    PreferencePair,
    Stats,
    TurnRecord,
    WinRate,
)
from storage.repository import Repository
from storage.validation import TIMING_FIELDS, NotFoundError, TurnStateError, VoteRefusedError

__all__ = [
    "DB_URL_ENV",
    "MODES",
    "RATINGS",
    "TIMING_FIELDS",
    "TURN_STATUSES",
    "VOTES",
    "AudioStore",
    "ComparisonRecord",
    "ConversationRecord",
    "FeedbackRecord",
    "NotFoundError",
    "PreferencePair",
    "Repository",
    "Stats",
    "TurnRecord",
    "TurnStateError",
    "VoteRefusedError",
    "WinRate",
    "head_revision",
    "init_db",
    "make_engine",
    "resolve_url",
]
