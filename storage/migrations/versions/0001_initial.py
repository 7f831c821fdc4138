"""Initial schema: conversations, turns (with generated speech tokens), comparisons.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Values are spelled out here rather than imported from ``storage.models``: a revision is a frozen
snapshot of the schema at that time.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MODES = ("S2M", "S2T", "T2M", "T2T", "STC", "SAC", "SUC")
TURN_STATUSES = ("running", "done", "error", "cancelled")
VOTES = ("A", "B", "tie", "both_bad")


def _in(column: str, values: tuple) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("checkpoint_id", sa.String(255), nullable=False),
        sa.Column("session_id", sa.String(255), nullable=True),
        sa.Column("title", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_conversations"),
    )
    op.create_index("ix_conversations_created_at", "conversations", ["created_at"])
    op.create_index("ix_conversations_session_id", "conversations", ["session_id"])

    op.create_table(
        "turns",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("conversation_id", sa.String(36), nullable=False),
        sa.Column("turn_index", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("system_prompt", sa.Text(), nullable=False),
        sa.Column("user_text", sa.Text(), nullable=True),
        sa.Column("user_audio_path", sa.String(512), nullable=True),
        sa.Column("transcript", sa.Text(), nullable=True),
        sa.Column("draft_text", sa.Text(), nullable=True),
        sa.Column("reply_text", sa.Text(), nullable=True),
        sa.Column("speech_tokens", sa.JSON(), nullable=True),
        sa.Column("reply_audio_path", sa.String(512), nullable=True),
        sa.Column("checkpoint_id", sa.String(255), nullable=False),
        sa.Column("sampling", sa.JSON(), nullable=False),
        sa.Column("time_to_first_text_ms", sa.Float(), nullable=True),
        sa.Column("time_to_first_audio_ms", sa.Float(), nullable=True),
        sa.Column("real_time_factor", sa.Float(), nullable=True),
        sa.Column("audio_seconds", sa.Float(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(_in("mode", MODES), name="ck_turns_mode"),
        sa.CheckConstraint(_in("status", TURN_STATUSES), name="ck_turns_status"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_turns_conversation_id_conversations",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_turns"),
    )
    op.create_index(
        "ix_turns_conversation_id_turn_index", "turns", ["conversation_id", "turn_index"], unique=True
    )
    op.create_index("ix_turns_status", "turns", ["status"])
    op.create_index("ix_turns_created_at", "turns", ["created_at"])

    op.create_table(
        "comparisons",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("turn_a_id", sa.String(36), nullable=False),
        sa.Column("turn_b_id", sa.String(36), nullable=False),
        sa.Column("label_a", sa.String(255), nullable=False),
        sa.Column("label_b", sa.String(255), nullable=False),
        sa.Column("blinded", sa.Boolean(), nullable=False),
        sa.Column("vote", sa.String(16), nullable=True),
        sa.Column("voted_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("session_id", sa.String(255), nullable=True),
        sa.CheckConstraint(f"vote IS NULL OR {_in('vote', VOTES)}", name="ck_comparisons_vote"),
        sa.ForeignKeyConstraint(
            ["turn_a_id"], ["turns.id"], name="fk_comparisons_turn_a_id_turns", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["turn_b_id"], ["turns.id"], name="fk_comparisons_turn_b_id_turns", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_comparisons"),
    )
    op.create_index("ix_comparisons_turn_a_id", "comparisons", ["turn_a_id"])
    op.create_index("ix_comparisons_turn_b_id", "comparisons", ["turn_b_id"])


def downgrade() -> None:
    op.drop_table("comparisons")
    op.drop_table("turns")
    op.drop_table("conversations")
