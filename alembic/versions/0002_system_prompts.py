"""System prompts: a session's system prompt and the turn it applies from.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Existing sessions get no rows: they keep the model template's default system
# message, which is what their turns were generated with.


def upgrade() -> None:
    op.create_table(
        "system_prompts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("from_turn", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name="fk_system_prompts_session_id_sessions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_system_prompts"),
        sa.UniqueConstraint("session_id", "from_turn", name="uq_system_prompts_session_id_from_turn"),
    )
    op.create_index("ix_system_prompts_session_id", "system_prompts", ["session_id"])


def downgrade() -> None:
    op.drop_index("ix_system_prompts_session_id", table_name="system_prompts")
    op.drop_table("system_prompts")
