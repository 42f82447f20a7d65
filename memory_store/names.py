"""Session names with SQLAlchemy alone: what shell completion asks at every Tab, before torch could load.

    >>> session_names("sqlite:////nonexistent/folder/c.db")
    []
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from memory_store.models import ChatSession


def session_names(url: str) -> list[str]:
    """Session names, most recently used first; none when the SQLite file does not exist yet (connecting
    would create an empty database file)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not (parsed.database and Path(parsed.database).is_file()):
        return []
    engine = create_engine(parsed, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.scalars(select(ChatSession.name).order_by(ChatSession.last_used_at.desc())))
    finally:
        engine.dispose()
