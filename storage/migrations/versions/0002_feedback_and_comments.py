"""Feedback table (like / dislike per turn), comparison comments, turn error messages.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02

Only additions (a table, two nullable columns): existing rows are kept as they are, with NULL in
the new columns.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("comparisons", sa.Column("comment", sa.Text(), nullable=True))
    op.add_column("turns", sa.Column("error_message", sa.Text(), nullable=True))
    op.create_table(
        "feedback",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("turn_id", sa.String(36), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("rating IN (1, -1)", name="ck_feedback_rating"),
        sa.ForeignKeyConstraint(
            ["turn_id"], ["turns.id"], name="fk_feedback_turn_id_turns", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
    )
    op.create_index("ix_feedback_turn_id", "feedback", ["turn_id"])


def downgrade() -> None:
    op.drop_index("ix_feedback_turn_id", table_name="feedback")
    op.drop_table("feedback")
    # Plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35); no table rebuild needed.
    op.drop_column("turns", "error_message")
    op.drop_column("comparisons", "comment")
