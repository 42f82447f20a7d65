"""engrams.sources (where each slot came from) and the forgets table (edits of an engram's slots).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Existing engrams get NULL sources: `companion memory` shows their slots as "source unknown".


def upgrade() -> None:
    with op.batch_alter_table("engrams") as batch:
        batch.add_column(sa.Column("sources", sa.Text(), nullable=True))
    op.create_table(
        "forgets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("cycle", sa.Integer(), nullable=False),
        sa.Column("asked", sa.Text(), nullable=False),
        sa.Column("removed", sa.Text(), nullable=False),
        sa.Column("slots_before", sa.Integer(), nullable=False),
        sa.Column("slots_after", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], name="fk_forgets_session_id_sessions",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_forgets"),
    )
    op.create_index("ix_forgets_session_id", "forgets", ["session_id"])


def downgrade() -> None:
    op.drop_index("ix_forgets_session_id", table_name="forgets")
    op.drop_table("forgets")
    with op.batch_alter_table("engrams") as batch:
        batch.drop_column("sources")
