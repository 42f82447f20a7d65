"""The store on a real PostgreSQL server, so "any SQLAlchemy URL" is tested, not assumed.

Needs COMPANION_TEST_PG_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:54329/companion_test),
which .ci/run sets after starting a throwaway cluster on loopback; without it
every test here is skipped with that reason. Each test starts from an empty
`public` schema, so point it only at a database made for these tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
import torch
from sqlalchemy import create_engine, event, func, inspect, select, text, update
from sqlalchemy.orm import Session

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from memory_store import (Base, ChatSession, CorruptEngramError, Engram, SchemaTooNewError, StaleSessionError, Turn,
                          add_turn, create_session, delete_session, engram_rows, get_session, latest_engram,
                          list_sessions, load_engram, open_store, search_turns, turns)
from memory_store.db import alembic_config
from memory_store.search import include_name

PG_URL = os.environ.get("COMPANION_TEST_PG_URL")
if not PG_URL and os.environ.get("COMPANION_REQUIRE_PG"):
    raise RuntimeError("COMPANION_REQUIRE_PG is set but COMPANION_TEST_PG_URL is not: the PostgreSQL tests "
                       "must run here (.ci/run starts the server and sets both)")
pytestmark = pytest.mark.skipif(
    not PG_URL, reason="COMPANION_TEST_PG_URL is not set (.ci/run starts PostgreSQL and sets it)"
)
SHAPE = (32, 576)


def _reset(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()



def test_processes_migrating_a_blank_database_at_once_all_succeed(open_at_once):
    _reset(PG_URL)
    assert open_at_once(PG_URL, 4) == []
    engine = create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            assert len(MigrationContext.configure(conn).get_current_heads()) == 1
    finally:
        engine.dispose()


@pytest.fixture()
def pg():
    _reset(PG_URL)
    store = open_store(PG_URL)
    yield store
    store.close()


def _engram(seed: int) -> torch.Tensor:
    return torch.randn(*SHAPE, generator=torch.Generator().manual_seed(seed))


def _chat(store, name="work"):
    with store.session() as db, db.begin():
        return create_session(db, name=name, model_name="m", model_fingerprint="ab" * 32,
                              engram_config={"layer": 16, "slots": 32})


def _turn(db, chat, expected, engram, text_="hi"):
    return add_turn(db, chat=chat, expected_cycle=expected, user_text=text_, reply_text=f"re: {text_}",
                    prompt_tokens=5, reply_tokens=7, transcript_tokens=12, gen_seconds=0.5, update_seconds=0.1,
                    engram=engram, engram_config={"layer": 16, "slots": 32})


def _counts(store):
    with store.session() as db:
        return (db.scalar(select(func.count()).select_from(Turn)),
                db.scalar(select(func.count()).select_from(Engram)))


def test_server_is_postgres(pg):
    assert pg.engine.dialect.name == "postgresql"
    with pg.engine.connect() as conn:
        assert "PostgreSQL" in conn.execute(text("SELECT version()")).scalar()


def test_schema_at_head_matches_models(pg):
    assert {"sessions", "turns", "engrams", "alembic_version"} <= set(inspect(pg.engine).get_table_names())
    with pg.engine.connect() as conn:
        # include_name as alembic/env.py passes it: the search index (0005) is outside the models.
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": include_name})
        assert compare_metadata(ctx, Base.metadata) == []


def test_create_add_turn_latest_list(pg):
    chat = _chat(pg)
    with pg.session() as db, db.begin():
        _turn(db, chat, 0, _engram(1), "first")
    with pg.session() as db, db.begin():
        _turn(db, chat, 1, _engram(2), "second")
    with pg.session() as db:
        fresh = get_session(db, name="work")
        assert fresh.cycle == 2 and fresh.created_at.tzinfo is not None
        tensor, row = latest_engram(db, chat=fresh)
        assert row.cycle == 2 and torch.equal(tensor, _engram(2))  # bytea round trip is bit-exact
        assert [t.user_text for t in turns(db, chat=fresh)] == ["first", "second"]
        assert [torch.equal(load_engram(r), _engram(r.cycle)) for r in engram_rows(db, chat=fresh)] == [True, True]
        assert [(s.name, s.turns, s.cycle) for s in list_sessions(db)] == [("work", 2, 2)]


def test_duplicate_name_and_stale_cycle_leave_nothing(pg):
    chat = _chat(pg)
    with pytest.raises(StaleSessionError, match="already exists"):
        _chat(pg)
    with pg.session() as db, db.begin():
        _turn(db, chat, 0, _engram(1))
    with pytest.raises(StaleSessionError, match="moved on"):
        with pg.session() as db, db.begin():
            _turn(db, chat, 0, _engram(2))
    assert _counts(pg) == (1, 1)


def test_rolled_back_turn_leaves_no_trace(pg):
    chat = _chat(pg)
    with pytest.raises(RuntimeError):
        with pg.session() as db, db.begin():
            _turn(db, chat, 0, _engram(1))
            raise RuntimeError("boom")
    assert _counts(pg) == (0, 0)
    with pg.session() as db:
        assert get_session(db, name="work").cycle == 0


def test_concurrent_writers_exactly_one_wins(pg):
    """Two connections add turn 1 at the same moment: the row lock + cycle check let one through."""
    _chat(pg)
    other = open_store(PG_URL)
    barrier = threading.Barrier(2)
    outcome = {}

    def writer(store, seed):
        with store.session() as db:
            chat = get_session(db, name="work")
        try:
            with store.session() as db, db.begin():
                barrier.wait(timeout=30)
                _turn(db, chat, 0, _engram(seed), f"writer {seed}")
            outcome[seed] = "ok"
        except StaleSessionError:
            outcome[seed] = "stale"

    threads = [threading.Thread(target=writer, args=(s, i)) for i, s in ((1, pg), (2, other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    other.close()
    assert sorted(outcome.values()) == ["ok", "stale"]
    assert _counts(pg) == (1, 1)
    winner = next(k for k, v in outcome.items() if v == "ok")
    with pg.session() as db:
        tensor, _ = latest_engram(db, chat=get_session(db, name="work"))
        assert torch.equal(tensor, _engram(winner))


def test_corrupt_row_named_and_listing_survives(pg):
    chat = _chat(pg)
    with pg.session() as db, db.begin():
        _turn(db, chat, 0, _engram(1))
    with pg.session() as db, db.begin():
        row = db.scalars(select(Engram)).one()
        data = bytearray(row.data)
        data[-1] ^= 0xFF
        db.execute(update(Engram).values(data=bytes(data)))
    with pg.session() as db:
        assert [s.name for s in list_sessions(db)] == ["work"]
        with pytest.raises(CorruptEngramError, match=r"'work' cycle 1: checksum mismatch"):
            latest_engram(db, chat=chat)


def test_delete_cascades_and_database_cascade(pg):
    keep, gone = _chat(pg, "keep"), _chat(pg, "gone")
    with pg.session() as db, db.begin():
        _turn(db, keep, 0, _engram(1))
    with pg.session() as db, db.begin():
        _turn(db, gone, 0, _engram(2))
    with pg.session() as db, db.begin():
        assert delete_session(db, name="gone")
    assert _counts(pg) == (1, 1)
    with pg.session() as db, db.begin():
        db.execute(text("DELETE FROM sessions"))  # ON DELETE CASCADE in the server itself
    assert _counts(pg) == (0, 0)
    with pg.session() as db:
        assert db.scalar(select(func.count()).select_from(ChatSession)) == 0


def test_migrations_down_and_up_and_newer_schema_refused(pg):
    pg.close()
    engine = create_engine(PG_URL)
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    assert not {"sessions", "turns", "engrams"} & set(inspect(engine).get_table_names())
    open_store(PG_URL).close()  # upgrades again
    assert {"sessions", "turns", "engrams"} <= set(inspect(engine).get_table_names())
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(SchemaTooNewError, match="9999"):
        open_store(PG_URL)


def test_first_schema_then_upgrade_keeps_data(tmp_path):
    """Revision 0001 on the server, rows written there, then open_store upgrades to head."""
    _reset(PG_URL)
    engine = create_engine(PG_URL)
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    engine.dispose()
    store = open_store(PG_URL)
    chat = _chat(store)
    with store.session() as db, db.begin():
        _turn(db, chat, 0, _engram(7))
    store.close()
    store = open_store(PG_URL)
    with store.session() as db:
        tensor, row = latest_engram(db, chat=get_session(db, name="work"))
        assert torch.equal(tensor, _engram(7))
    store.close()


def test_export_import_through_postgres(pg, tmp_path):
    from companion.app.transfer import export_session, import_session

    chat = _chat(pg)
    for i in range(2):
        with pg.session() as db, db.begin():
            _turn(db, chat, i, _engram(10 + i), f"t{i}")
    with pg.session() as db, db.begin():
        db.execute(update(ChatSession).values(engram_config=json.dumps({"layer": 16, "slots": 32})))
        db.execute(update(Engram).values(config=json.dumps({"layer": 16, "slots": 32})))
    export_session(pg, "work", tmp_path / "w.companion")
    assert import_session(pg, tmp_path / "w.companion", name="copy").turns == 2
    with pg.session() as db:
        rows = engram_rows(db, chat=get_session(db, name="copy"))
        assert [torch.equal(load_engram(r), _engram(10 + i)) for i, r in enumerate(rows)] == [True, True]


def _found(store, query, **kw):
    with store.session() as db:
        return [(h.session, h.turn) for h in search_turns(db, query=query, **kw)]


def test_search_on_postgres_finds_words_newest_first(pg):
    for name, words in (("trip", "We meet at Kyoto station."), ("trip", "Bring the umbrella."),
                        ("food", "Dinner in Kyoto? Don't be late.")):
        with pg.session() as db, db.begin():
            chat = get_session(db, name=name) or _chat(pg, name)
            _turn(db, chat, chat.cycle, _engram(1), words)
    assert _found(pg, "KYOTO") == [("food", 1), ("trip", 1)]
    assert _found(pg, "kyoto", session="trip") == [("trip", 1)]
    assert _found(pg, "kyoto", limit=1) == [("food", 1)]
    assert _found(pg, '"kyoto station"') == [("trip", 1)] and _found(pg, '"station kyoto"') == []
    assert _found(pg, "umbr") == [] and _found(pg, "umbr*") == [("trip", 2)]
    assert _found(pg, "don't") == [("food", 1)] and _found(pg, "don*") == [("food", 1)]
    with pg.session() as db:
        (hit,) = search_turns(db, query="dinner")
        assert hit.matched == "both" and hit.snippet.startswith("[Dinner] in Kyoto? Don't")  # the reply is "re: ..."
        for query in ('"unbalanced', "AND", "foo NOT", "a & b | !c", "x:*", "kyoto(", "'kyoto'", "a<->b", "_* kyoto"):
            search_turns(db, query=query)  # never a tsquery syntax error
    with pg.session() as db, db.begin():
        assert delete_session(db, name="food")
    assert _found(pg, "kyoto") == [("trip", 1)]


def test_search_uses_the_gin_index(pg):
    chat = _chat(pg)
    with pg.session() as db, db.begin():
        _turn(db, chat, 0, _engram(1), "an indexed lighthouse")
    seen = []
    event.listen(pg.engine, "before_cursor_execute", lambda *a: seen.append(a[2:4]))
    with pg.session() as db:
        assert [h.turn for h in search_turns(db, query="lighthouse* indexed")] == [1]
    statement, params = next(s for s in seen if "@@" in s[0])
    with pg.engine.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")  # one row: the planner would scan otherwise
        plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, params))
    assert "ix_turns_fts" in plan


def test_turns_from_before_0005_are_found_after_upgrade_and_downgrade_drops_the_index():
    _reset(PG_URL)
    engine = create_engine(PG_URL)
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0004")
    with Session(engine) as db, db.begin():  # turns written while the schema was at 0004
        chat = create_session(db, name="old", model_name="m", model_fingerprint="ab" * 32, engram_config={})
        _turn(db, chat, 0, _engram(1), "the old lighthouse")
    store = open_store(PG_URL)  # 0004 -> 0005 indexes the existing turns
    try:
        assert _found(store, "lighthouse") == [("old", 1)]
        assert "ix_turns_fts" in {i["name"] for i in inspect(store.engine).get_indexes("turns")}
    finally:
        store.close()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0004")
    assert "ix_turns_fts" not in {i["name"] for i in inspect(engine).get_indexes("turns")}
    engine.dispose()


@pytest.mark.slow
def test_companion_say_against_postgres(embedded_lm, companion_home):
    """The real command, end to end, with --db pointing at the server."""
    _reset(PG_URL)
    env = {**os.environ, "COMPANION_HOME": str(companion_home), "HF_HUB_OFFLINE": "1"}
    env.pop("COMPANION_CRASH_AT", None)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "companion", "--db", PG_URL, *args], env=env,
                              capture_output=True, text=True, timeout=300)

    for i, text_ in enumerate(["My cat is called Miso.", "What is my cat called?"], 1):
        res = cli("say", "-s", "pg", "--json", "--max-new-tokens", "8", text_)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["cycle"] == i
    listed = json.loads(cli("sessions", "--json").stdout)
    assert [(s["name"], s["turns"]) for s in listed] == [("pg", 2)]
    shown = cli("show", "pg")
    assert shown.returncode == 0 and shown.stdout.count("[ok]") == 2
