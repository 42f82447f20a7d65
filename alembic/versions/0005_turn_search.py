"""Full-text search over turns (`companion search`): FTS5 on SQLite, a GIN index on PostgreSQL.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Neither object is in the ORM models: memory_store/search.py's include_name keeps autogenerate from
# reporting them, and memory_store/search.py spells the same names and the same PostgreSQL expression.
#
# SQLite: an external-content FTS5 table, so the text is stored once (in turns) and only the index is
# extra. Triggers keep it right however a turn goes: inserted, edited, deleted directly (undo) or by
# ON DELETE CASCADE from sessions (SQLite fires triggers for foreign-key actions; db.py turns keys on).
# A later migration that rebuilds `turns` with batch_alter_table drops these triggers with the old
# table: it must create them again and 'rebuild' the index.
#
# PostgreSQL: an expression index rather than a generated tsvector column, so `turns` has the same
# columns on every dialect (the models, fork, export and import never meet a dialect-only column) and
# no second copy of every turn's words is stored. 'simple' neither stems nor drops stop words, like
# SQLite's unicode61 tokenizer, so a query finds the same turns on both.
#
# Other dialects get nothing: search falls back to a case-insensitive LIKE.

_TRIGGERS = {
    "turns_fts_insert": """
        CREATE TRIGGER turns_fts_insert AFTER INSERT ON turns BEGIN
            INSERT INTO turns_fts(rowid, user_text, reply_text) VALUES (new.id, new.user_text, new.reply_text);
        END""",
    # 'delete' needs the values that were indexed, which an AFTER trigger still has in `old`.
    "turns_fts_delete": """
        CREATE TRIGGER turns_fts_delete AFTER DELETE ON turns BEGIN
            INSERT INTO turns_fts(turns_fts, rowid, user_text, reply_text)
                VALUES ('delete', old.id, old.user_text, old.reply_text);
        END""",
    "turns_fts_update": """
        CREATE TRIGGER turns_fts_update AFTER UPDATE ON turns BEGIN
            INSERT INTO turns_fts(turns_fts, rowid, user_text, reply_text)
                VALUES ('delete', old.id, old.user_text, old.reply_text);
            INSERT INTO turns_fts(rowid, user_text, reply_text) VALUES (new.id, new.user_text, new.reply_text);
        END""",
}


def _sqlite_has_fts5() -> bool:
    # Python's own sqlite3 has FTS5 nearly everywhere; a build without it gets the LIKE fallback
    # instead of a migration that cannot run. Offline (--sql) there is no build to ask: assume it.
    if op.get_context().as_sql:
        return True
    return bool(op.get_bind().exec_driver_sql("SELECT sqlite_compileoption_used('ENABLE_FTS5')").scalar())


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite" and _sqlite_has_fts5():
        op.execute("CREATE VIRTUAL TABLE turns_fts USING fts5("
                   "user_text, reply_text, content='turns', content_rowid='id')")
        for sql in _TRIGGERS.values():
            op.execute(sql)
        # The turns written before this revision.
        op.execute("INSERT INTO turns_fts(turns_fts) VALUES ('rebuild')")
    elif dialect == "postgresql":
        op.execute("CREATE INDEX ix_turns_fts ON turns USING gin "
                   "(to_tsvector('simple'::regconfig, user_text || ' ' || reply_text))")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        # IF EXISTS: a database upgraded by an SQLite without FTS5 has none of them.
        for name in _TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS turns_fts")
    elif dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_turns_fts")
