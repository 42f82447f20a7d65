"""Schema migrations: blank databases get head, newer databases are refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from memory_store import Base, SchemaTooNewError, open_store
from memory_store.db import alembic_config

REPO = Path(__file__).resolve().parent.parent
TABLES = {"sessions", "turns", "engrams"}


def _head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _current(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()


def test_single_head_named_0001() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == ["0001"]


def test_upgrade_blank_db_gives_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'blank.db'}"
    engine = create_engine(url)
    try:
        config = alembic_config()
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        assert TABLES <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert _current(url) == {_head()}


def test_open_store_records_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    open_store(url).close()
    assert _current(url) == {_head()}


def test_models_match_migrations(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        with store.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, Base.metadata) == []
    finally:
        store.close()


def test_downgrade_to_base_and_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    open_store(url).close()
    engine = create_engine(url)
    try:
        config = alembic_config()
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "base")
        assert not TABLES & set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    open_store(url).close()
    assert _current(url) == {_head()}


def test_unknown_revision_raises_schema_too_new(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'future.db'}"
    open_store(url).close()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(SchemaTooNewError, match=r"9999.*upgrade Companion"):
        open_store(url)
    assert _current(url) == {"9999"}  # refused, not "repaired"


def test_unknown_revision_on_otherwise_blank_db(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'stamped.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        conn.execute(text("INSERT INTO alembic_version VALUES ('9999')"))
    engine.dispose()
    with pytest.raises(SchemaTooNewError):
        open_store(url)
    engine = create_engine(url)
    try:
        assert "sessions" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_alembic_cli_upgrades_companion_db(tmp_path: Path) -> None:
    db = tmp_path / "cli" / "companion.db"
    env = {**os.environ, "COMPANION_DB": f"sqlite:///{db}", "COMPANION_HOME": str(tmp_path / "home")}
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini"), "upgrade", "head"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    assert _current(f"sqlite:///{db}") == {_head()}
    assert (db.stat().st_mode & 0o777) == 0o600
