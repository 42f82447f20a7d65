"""Opening the database: engine setup, SQLite hardening, and schema migration."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from memory_store.errors import SchemaTooNewError, StoreError

ALEMBIC_DIR = Path(__file__).resolve().parent.parent / "alembic"
# Two terminals on one session is the expected contention; a turn's write is
# short, so waiting beats failing.
BUSY_TIMEOUT_MS = 30_000


def _sqlite_file(url: URL) -> Path | None:
    """The on-disk path for a plain SQLite file URL; None for anything else."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database
    if not database or database == ":memory:":
        return None
    if database.startswith("file:") or str(url.query.get("uri", "")).lower() in {"true", "1"}:
        return None
    return Path(database).expanduser()


def _prepare_sqlite_file(path: Path) -> None:
    if not path.parent.is_dir():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)  # mkdir's mode is masked by the umask
    # Create it ourselves so it never exists with the umask's wider mode: it
    # holds the user's conversations. SQLite gives -wal/-shm the same mode.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for url; SQLite files are created 0600 and run in WAL mode with FKs on."""
    parsed = make_url(url)
    path = _sqlite_file(parsed)
    if path is not None:
        _prepare_sqlite_file(path)
    engine = create_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                # Off by default in SQLite; the schema's ON DELETE CASCADE needs it.
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                if path is not None:
                    # Readers (e.g. `companion sessions`) don't block a writing chat.
                    cursor.execute("PRAGMA journal_mode=WAL")
            finally:
                cursor.close()

    return engine


def alembic_config() -> Config:
    """A file-less alembic Config pointing at the repository's migration scripts."""
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    return config


def _locked_sqlite_engine(url: URL) -> Engine:
    """An engine on the SQLite file whose transactions start with BEGIN IMMEDIATE.

    pysqlite opens no transaction before DDL, so two processes opening a new
    database would both see no schema and both create tables. Taking the write
    lock before reading the schema revision makes the second wait (busy_timeout)
    and then find the schema already at head.
    """
    engine = make_engine(url, poolclass=NullPool)

    @event.listens_for(engine, "connect")
    def _own_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _write_lock(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _lock_schema(connection: Connection) -> None:
    """Serialise concurrent migrations on servers (SQLite files lock by BEGIN IMMEDIATE)."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7362616)")


def _migrate(engine: Engine) -> None:
    if _sqlite_file(engine.url) is None:
        _migrate_on(engine)
        return
    locked = _locked_sqlite_engine(engine.url)
    try:
        _migrate_on(locked)
    finally:
        locked.dispose()


def _migrate_on(engine: Engine) -> None:
    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    known = {rev.revision for rev in script.walk_revisions()}
    with engine.begin() as connection:
        _lock_schema(connection)
        current = set(MigrationContext.configure(connection).get_current_heads())
        unknown = sorted(current - known)
        if unknown:
            raise SchemaTooNewError(
                f"database schema revision {', '.join(unknown)} is newer than this "
                "Companion understands; upgrade Companion to open it"
            )
        if current == set(script.get_heads()):
            return
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class Store:
    """An open database: an engine plus a factory for ORM sessions."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.engine = engine
        self.url = url
        # expire_on_commit=False: ChatSession objects outlive the Session that
        # loaded them across the REPL's turns.
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def session(self) -> Session:
        return self._sessions()

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({make_url(self.url).render_as_string(hide_password=True)!r})"


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _shown(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return repr(url)


def open_store(url: str) -> Store:
    """Open (creating and migrating as needed) the database at url.

    Anything that stops the database from opening (a bad URL, a missing
    driver, an unwritable folder, a server that refuses) becomes a one-line
    StoreError naming the URL, never a traceback.
    """
    try:
        engine = make_engine(url)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise StoreError(f"cannot use database URL {_shown(url)}: {_first_line(exc)}") from exc
    except OSError as exc:
        path = _sqlite_file(make_url(url))
        blocker = next((p for p in (path.parents if path else ()) if p.exists() and not p.is_dir()), None)
        reason = (f"{blocker} is a file, not a folder" if blocker is not None else
                  f"{exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}")
        raise StoreError(f"cannot create the database {_shown(url)}: {reason}") from exc
    try:
        _migrate(engine)
    except DBAPIError as exc:
        engine.dispose()
        raise StoreError(f"cannot open the database {_shown(url)}: {_first_line(exc)}") from exc
    except BaseException:
        engine.dispose()
        raise
    return Store(engine, url)
