"""Where Companion keeps its data: one folder, movable with COMPANION_HOME.

The folder holds the SQLite database (unless COMPANION_DB or --db names another
SQLAlchemy URL) and the cache of converted model weights.
"""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """The data folder, created owner-only (0700) on first use."""
    home = os.environ.get("COMPANION_HOME")
    path = Path(home).expanduser() if home else Path.home() / ".companion"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def database_url(override: str | None = None) -> str:
    """--db beats COMPANION_DB beats the SQLite file in the data folder."""
    if override:
        return override
    env = os.environ.get("COMPANION_DB")
    if env:
        return env
    return f"sqlite:///{data_dir() / 'companion.db'}"


def cache_dir() -> Path:
    path = data_dir() / "models"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path
