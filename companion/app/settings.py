"""Where Companion keeps its data: one folder, movable with COMPANION_HOME.

The folder holds the SQLite database (unless COMPANION_DB or --db names another
SQLAlchemy URL), the cache of converted model weights, the optional config.toml
and the REPL's input history.
"""

from __future__ import annotations

import os
from pathlib import Path


class DataFolderError(RuntimeError):
    """The data folder cannot be created or written; the message names it and says what to do."""


def _private_dir(path: Path) -> Path:
    """mkdir -p, then 0700 on a folder we created (mkdir's mode is masked by the umask).

    A folder that already exists keeps the mode its owner gave it; the
    database inside it is always created 0600 (memory_store.db).
    """
    try:
        if not path.is_dir():
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(path, 0o700)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied", str(path))
    except OSError as exc:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        reason = f"{blocker} is a file" if blocker is not None else (exc.strerror or str(exc))
        raise DataFolderError(
            f"cannot use the data folder {path}: {reason}; set COMPANION_HOME to a folder you can write"
        ) from exc
    return path


def data_dir() -> Path:
    """The data folder, created owner-only (0700) on first use."""
    home = os.environ.get("COMPANION_HOME")
    return _private_dir(Path(home).expanduser() if home else Path.home() / ".companion")


def database_url(override: str | None = None) -> str:
    """--db beats COMPANION_DB beats the SQLite file in the data folder."""
    if override:
        return override
    env = os.environ.get("COMPANION_DB")
    if env:
        return env
    return f"sqlite:///{data_dir() / 'companion.db'}"


def cache_dir() -> Path:
    return _private_dir(cache_path())


def cache_path() -> Path:
    """Where converted weights are cached (not created here: `companion path` only reports it)."""
    return data_dir() / "models"


def config_path() -> Path:
    """The optional config file (companion.app.config_file reads it)."""
    return data_dir() / "config.toml"


def history_path() -> Path:
    """The REPL's input history (created owner-only when the chat starts)."""
    return data_dir() / "history"
