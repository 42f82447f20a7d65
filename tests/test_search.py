"""`companion search`: the FTS5 index kept right by its triggers, the LIKE fallback, and the command."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import torch
from sqlalchemy import create_engine, text, update
from sqlalchemy.orm import Session

from alembic import command
from memory_store import (SearchError, Store, Turn, add_turn, create_session, delete_session, get_session,
                          open_store, search_turns)
from memory_store.db import alembic_config
from memory_store.search import _marked, parse_query

NOW = datetime.now(UTC)


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'c.db'}"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = open_store(_url(tmp_path))
    yield s
    s.close()


def _add(store: Store, name: str, user: str, reply: str = "ok", *, days_ago: float | None = None) -> None:
    """One turn of session `name` (created on first use); no model, a small random engram."""
    with store.session() as db, db.begin():
        chat = get_session(db, name=name) or create_session(db, name=name, model_name="m",
                                                            model_fingerprint="ab" * 32, engram_config={})
        turn = add_turn(db, chat=chat, expected_cycle=chat.cycle, user_text=user, reply_text=reply, prompt_tokens=1,
                        reply_tokens=1, transcript_tokens=1, gen_seconds=0.1, update_seconds=0.1,
                        engram=torch.randn(4, 8), engram_config={})
        if days_ago is not None:  # an UPDATE of the row, which the update trigger must survive
            db.execute(update(Turn).where(Turn.id == turn.id).values(created_at=NOW - timedelta(days=days_ago)))


def _found(store: Store, query: str, **kw) -> list[tuple[str, int]]:
    with store.session() as db:
        return [(h.session, h.turn) for h in search_turns(db, query=query, **kw)]


def _fts_ok(store: Store) -> None:
    """FTS5's own check that the index holds exactly what `turns` holds."""
    with store.engine.begin() as conn:
        conn.execute(text("INSERT INTO turns_fts(turns_fts, rank) VALUES ('integrity-check', 1)"))


@pytest.fixture
def trips(store: Store) -> Store:
    _add(store, "trip", "We meet at the Kyoto station.", "Kyoto station, noted.", days_ago=3)
    _add(store, "trip", "Bring the umbrella.", "Umbrella, yes.", days_ago=2)
    _add(store, "food", "Dinner in Kyoto?", "A ramen place near the station.", days_ago=1)
    return store


def test_a_word_across_sessions_newest_first(trips: Store) -> None:
    assert _found(trips, "kyoto") == [("food", 1), ("trip", 1)]
    assert _found(trips, "STATION") == [("food", 1), ("trip", 1)]  # case ignored
    with trips.session() as db:
        food, trip = search_turns(db, query="kyoto")
    assert food.matched == "user" and food.snippet == "Dinner in [Kyoto]?"
    assert trip.matched == "both" and "[Kyoto]" in trip.snippet
    assert food.created_at > trip.created_at and food.created_at.tzinfo is not None


def test_session_filter_limit_phrase_and_prefix(trips: Store) -> None:
    assert _found(trips, "kyoto", session="trip") == [("trip", 1)]
    assert _found(trips, "kyoto", limit=1) == [("food", 1)]
    assert _found(trips, "station kyoto") == [("food", 1), ("trip", 1)]  # every word, any order, either text
    assert _found(trips, '"kyoto station"') == [("trip", 1)]  # together, in that order
    assert _found(trips, '"station kyoto"') == []
    assert _found(trips, "umbr") == []  # whole words ...
    assert _found(trips, "umbr*") == [("trip", 2)]  # ... unless asked for a prefix
    with trips.session() as db:
        (hit,) = search_turns(db, query="ramen")
    assert (hit.matched, hit.snippet) == ("reply", "A [ramen] place near the station.")


def test_turns_added_later_are_found_and_edits_reindexed(trips: Store) -> None:
    _add(trips, "trip", "A note about lanterns.")  # the insert trigger
    assert _found(trips, "lanterns") == [("trip", 3)]
    with trips.session() as db, db.begin():  # the update trigger
        db.execute(update(Turn).where(Turn.user_text == "A note about lanterns.").values(user_text="About candles."))
    assert _found(trips, "lanterns") == [] and _found(trips, "candles") == [("trip", 3)]
    _fts_ok(trips)


def test_deleted_turns_are_no_longer_found(trips: Store) -> None:
    with trips.session() as db, db.begin():
        assert delete_session(db, name="food")  # deletes its turns directly, like undo will
    assert _found(trips, "kyoto") == [("trip", 1)]
    with trips.engine.begin() as conn:  # ON DELETE CASCADE from sessions
        conn.execute(text("DELETE FROM sessions WHERE name = 'trip'"))
    assert _found(trips, "kyoto") == [] and _found(trips, "umbrella") == []
    _fts_ok(trips)
    _add(trips, "trip", "Kyoto again.")  # a new turn may reuse a deleted turn's rowid
    assert _found(trips, "kyoto") == [("trip", 1)]
    _fts_ok(trips)


@pytest.mark.parametrize("query", ['"unbalanced', "AND", "foo NOT", "NEAR(kyoto station)", "user_text:kyoto",
                                   "kyoto OR", "^kyoto", "-kyoto", "(kyoto", "kyoto*)", '"" kyoto', "k'yoto*"])
def test_query_syntax_is_just_text(trips: Store, query: str) -> None:
    with trips.session() as db:
        search_turns(db, query=query)  # never an FTS5 syntax error


def test_fts_words_are_found_literally(store: Store) -> None:
    _add(store, "logic", "Cats AND dogs, NOT birds (NEAR the house).")
    assert _found(store, "AND") == [("logic", 1)]
    assert _found(store, "foo NOT") == []  # every word must appear
    assert _found(store, '"unbalanced') == []
    assert _found(store, '"near the') == [("logic", 1)]  # the stray quote is dropped
    assert _found(store, "NEAR(the house)") == [("logic", 1)]


@pytest.mark.parametrize("query", ["", "   ", "\n", '"', "* ( )", '""'])
def test_a_query_without_words_is_refused(store: Store, query: str) -> None:
    with store.session() as db, pytest.raises(SearchError, match=r"^(the search query is empty|nothing to search)"):
        search_turns(db, query=query)


def test_a_bad_limit_is_refused(store: Store) -> None:
    with store.session() as db, pytest.raises(SearchError, match="limit"):
        search_turns(db, query="x", limit=0)


def test_parse_query() -> None:
    assert [(t.text, t.prefix) for t in parse_query('a  "new  york" cat* "b')] == [
        ("a", False), ("new york", False), ("cat", True), ("b", False)]


def test_old_0004_database_finds_its_turns_after_upgrade(tmp_path: Path) -> None:
    url = _url(tmp_path)
    engine = create_engine(url)
    config = alembic_config()
    with engine.begin() as conn:  # turns written while the schema was at 0004
        config.attributes["connection"] = conn
        command.upgrade(config, "0004")
        assert "turns_fts" not in {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master"))}
        conn.execute(text("INSERT INTO sessions (id, name, created_at, last_used_at, model_name, model_fingerprint, "
                          "engram_config, cycle, recall) VALUES (1, 'old', '2026-01-02 03:04:05', "
                          "'2026-01-03 03:04:05', 'm', :fp, '{}', 2, 0)"), {"fp": "ab" * 32})
        for i, words in ((1, "the old lighthouse"), (2, "a newer lighthouse")):
            conn.execute(text("INSERT INTO turns (id, session_id, \"index\", user_text, reply_text, prompt_tokens, "
                              "reply_tokens, transcript_tokens, gen_seconds, update_seconds, created_at) VALUES "
                              "(:i, 1, :i, :u, 'r', 1, 1, 1, 0.1, 0.1, :t)"),
                         {"i": i, "u": words, "t": f"2026-01-0{i + 1} 03:04:05"})
    engine.dispose()
    store = open_store(url)  # 0004 -> 0005: the index is filled from the existing turns
    try:
        assert _found(store, "lighthouse") == [("old", 2), ("old", 1)]
        _add(store, "old", "and the newest lighthouse")
        assert _found(store, "lighthouse") == [("old", 3), ("old", 2), ("old", 1)]
        _fts_ok(store)
    finally:
        store.close()


def test_downgrade_removes_the_index_and_search_falls_back_to_like(trips: Store, tmp_path: Path) -> None:
    trips.close()
    engine = create_engine(_url(tmp_path))
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0004")
        names = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE name LIKE 'turns_fts%'"))}
        assert names == set()
    engine.dispose()
    engine = create_engine(_url(tmp_path))
    with Session(engine) as db:  # a database without the FTS table: LIKE, substrings, same order
        assert [(h.session, h.turn) for h in search_turns(db, query="kyoto")] == [("food", 1), ("trip", 1)]
        assert [h.turn for h in search_turns(db, query="umbr", session="trip")] == [2]
        (hit,) = search_turns(db, query="ramen")
        assert (hit.matched, hit.snippet) == ("reply", "A [ramen] place near the station.")
        assert search_turns(db, query="100%") == []  # LIKE wildcards are text
    engine.dispose()


def test_fallback_snippet_is_a_window_around_the_first_match() -> None:
    long = "x" * 100 + " Kyoto " + "y" * 100
    marked = _marked(long, parse_query("kyoto"))
    assert marked.startswith("…") and marked.endswith("…") and "\x02Kyoto\x03" in marked and len(marked) < 140


# --- the command -----------------------------------------------------------------------------------


@pytest.fixture
def cli(trips: Store, tmp_path: Path, monkeypatch, capsys):
    """companion.app.cli.main on the trips database: go(*argv) -> (status, stdout, stderr); no model allowed."""
    from companion.app import cli as cli_mod
    from companion.app import service

    def no_model(*_a, **_k):
        raise AssertionError("search must not load the model")

    monkeypatch.setattr(service, "load_model", no_model)
    monkeypatch.setenv("COMPANION_HOME", str(tmp_path / "home"))

    def go(*argv: str):
        capsys.readouterr()
        try:
            code = cli_mod.main(["--db", _url(tmp_path), *argv])
        except SystemExit as exc:  # argparse
            code = exc.code
        return (code, *capsys.readouterr())

    return go


def test_cli_prints_newest_first_one_line_each(cli) -> None:
    code, out, err = cli("search", "kyoto")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].split()[:4] == ["food", "#1", "yesterday", "you:"] and lines[0].endswith("Dinner in [Kyoto]?")
    assert lines[1].split()[:5] == ["trip", "#1", "3", "days", "ago"]
    code, out, _ = cli("search", "kyoto", "-s", "trip", "--limit", "5")
    assert code == 0 and len(out.splitlines()) == 1 and out.startswith("trip")
    code, out, _ = cli("search", "new", "york")
    assert (code, out) == (0, "no turns match 'new york'\n")


def test_cli_json(cli) -> None:
    code, out, _ = cli("search", "--json", "station")
    assert code == 0
    hits = json.loads(out)
    assert [(h["session"], h["turn"], h["matched"]) for h in hits] == [("food", 1, "reply"), ("trip", 1, "both")]
    assert hits[0]["created_ago"] == "yesterday" and "[station]" in hits[0]["snippet"]
    assert datetime.fromisoformat(hits[0]["created"]).tzinfo is not None
    assert json.loads(cli("search", "--json", "nothing-like-this")[1]) == []


@pytest.mark.parametrize("argv, message", [
    (["   "], "the search query is empty"),
    (["*"], "nothing to search for"),
    (["kyoto", "-s", "nope"], "no session named 'nope'"),
    (["kyoto", "-s", "bad/name"], "session name contains '/'"),
])
def test_cli_refusals_are_one_line(cli, argv, message) -> None:
    code, out, err = cli("search", *argv)
    assert code == 1 and out == "" and err.count("\n") == 1 and message in err and "Traceback" not in err


@pytest.mark.parametrize("query", ['"unbalanced', "AND", "foo NOT", "NEAR(", "a:b"])
def test_cli_fts_syntax_is_answered_in_one_line(cli, query) -> None:
    code, out, err = cli("search", query)
    assert code == 0 and err == "" and out.count("\n") == 1


def test_cli_bad_limit_is_a_usage_error(cli) -> None:
    code, _, err = cli("search", "kyoto", "--limit", "0")
    assert code == 2 and "out of range" in err
