"""Schema migrations: blank databases get head, old databases keep their data, newer ones are refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sqlalchemy import create_engine, inspect, text

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from memory_store import Base, SchemaTooNewError, crud, encode_engram, open_store
from memory_store.branching import fork_session
from memory_store.db import alembic_config
from memory_store.search import include_name
from memory_store.settings import set_system_prompt, system_prompt_at, system_prompts

REPO = Path(__file__).resolve().parent.parent
TABLES = {"sessions", "turns", "engrams", "system_prompts", "forgets"}


def _head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _current(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()


def test_single_head_named_0005() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == ["0005"]
    assert [r.revision for r in script.walk_revisions()] == ["0005", "0004", "0003", "0002", "0001"]


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
            # include_name as alembic/env.py passes it: the search index (0005) is outside the models.
            ctx = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": include_name})
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


def _migrate_to(url: str, revision: str, *, down: bool = False) -> None:
    engine = create_engine(url)
    try:
        config = alembic_config()
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(config, revision)
    finally:
        engine.dispose()


def _old_db_with_a_session(url: str) -> torch.Tensor:
    """A database at revision 0001 holding one session of two turns, written as 0001's schema saw it."""
    _migrate_to(url, "0001")
    engram = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    data, sha = encode_engram(engram)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO sessions (id, name, created_at, last_used_at, model_name, model_fingerprint, "
                          "engram_config, cycle) VALUES (1, 'old', '2026-01-02 03:04:05', '2026-01-03 03:04:05', "
                          "'tiny', :fp, '{}', 2)"), {"fp": "ab" * 32})
        for i in (1, 2):
            conn.execute(text("INSERT INTO turns (id, session_id, \"index\", user_text, reply_text, prompt_tokens, "
                              "reply_tokens, transcript_tokens, gen_seconds, update_seconds, created_at) VALUES "
                              "(:i, 1, :i, :u, 'r', 5, 6, 7, 0.5, 0.1, '2026-01-02 03:04:05')"), {"i": i, "u": f"u{i}"})
            conn.execute(text("INSERT INTO engrams (id, turn_id, session_id, cycle, data, dtype, shape, sha256, norm, "
                              "config, created_at) VALUES (:i, :i, 1, :i, :d, 'float32', '3,4', :s, 1.0, '{}', "
                              "'2026-01-02 03:04:05')"), {"i": i, "d": data, "s": sha})
    engine.dispose()
    assert _current(url) == {"0001"}
    return engram


def test_old_0001_database_with_data_upgrades_and_keeps_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engram = _old_db_with_a_session(url)
    store = open_store(url)  # upgrades 0001 -> head on open
    try:
        assert _current(url) == {_head()}
        with store.session() as db:
            chat = crud.get_session(db, name="old")
            assert (chat.cycle, chat.recall) == (2, 0)  # sessions from before --recall recall nothing
            assert system_prompts(db, chat=chat) == [] and system_prompt_at(db, chat=chat, turn=3) is None
            assert [t.user_text for t in crud.turns(db, chat=chat)] == ["u1", "u2"]
            tensor, row = crud.latest_engram(db, chat=chat)
            assert row.cycle == 2 and torch.equal(tensor, engram)
        with store.session() as db, db.begin():  # the new tables and columns are usable on it
            chat = crud.get_session(db, name="old")
            set_system_prompt(db, chat=chat, from_turn=3, text="Be terse.")
            fork_session(db, source=chat, name="old-fork", at=1)
        with store.session() as db:
            assert system_prompt_at(db, chat=crud.get_session(db, name="old"), turn=3) == "Be terse."
            assert crud.get_session(db, name="old-fork").cycle == 1
    finally:
        store.close()


def test_downgrade_to_0001_keeps_the_old_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _old_db_with_a_session(url)
    open_store(url).close()
    _migrate_to(url, "0001", down=True)
    engine = create_engine(url)
    try:
        assert "system_prompts" not in inspect(engine).get_table_names()
        assert "recall" not in {c["name"] for c in inspect(engine).get_columns("sessions")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT name, cycle FROM sessions")).all() == [("old", 2)]
            assert conn.execute(text("SELECT count(*) FROM engrams")).scalar() == 2
    finally:
        engine.dispose()
    open_store(url).close()  # and up again
    assert _current(url) == {_head()}



def test_processes_opening_a_new_database_at_once_all_succeed(tmp_path: Path, open_at_once) -> None:
    # Two `companion say` runs on a database that does not exist yet both
    # migrate it; the losers must wait for the winner, not fail on "table exists".
    url = f"sqlite:///{tmp_path / 'new.db'}"
    assert open_at_once(url, 6) == []
    assert _current(url) == {_head()}
