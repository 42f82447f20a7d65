"""`companion path`: where the data lives, without loading a model or opening the database."""

from __future__ import annotations

import re

from .settings import cache_path, config_path, data_dir, database_url, history_path


def shown_url(url: str) -> str:
    """A database URL fit to print: its password (if any) hidden.

    >>> shown_url("postgresql+psycopg://me:secret@localhost/companion")
    'postgresql+psycopg://me:***@localhost/companion'
    >>> shown_url("postgresql://me:s@c:r@t@db/companion")  # SQLAlchemy cannot parse it; still hidden
    'postgresql://me:***@db/companion'
    >>> shown_url("sqlite:////home/me/.companion/companion.db")
    'sqlite:////home/me/.companion/companion.db'
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"^([^:/]+://[^:/@]*:).*@", r"\1***@", url)


def data_paths(db: str | None = None) -> dict:
    """The data folder (created, as by every command), and what lives in or beside it."""
    config = config_path()
    return {"data": str(data_dir()), "database": shown_url(database_url(db)), "models": str(cache_path()),
            "config": str(config), "config_exists": config.is_file(), "history": str(history_path())}


def paths_text(paths: dict) -> str:
    config = paths["config"] + ("" if paths["config_exists"] else "  (none yet; optional)")
    rows = [("data folder", paths["data"]), ("database", paths["database"]), ("model cache", paths["models"]),
            ("config file", config), ("input history", paths["history"])]
    return "\n".join(f"{label:14}{value}" for label, value in rows)
