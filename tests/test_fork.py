"""`companion fork` and `companion rename` from the CLI on the tiny model.

The fork must start from exactly the source's engram after --at (compared as
tensors at the moment the fork's first turn injects it), and must leave every
row of the source byte-identical; refusals change nothing.
"""

from __future__ import annotations

import pytest
import torch
from sqlalchemy import create_engine, text

from companion.engine.cycle import Engine
from memory_store import crud, open_store

SMALL = ["--layer", "2", "--slots", "4", "--max-new-tokens", "5"]


def rows(url: str, name: str) -> dict[str, list[tuple]]:
    """Every column of every row the session owns, blobs included, in a stable order."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            sid = conn.execute(text("SELECT id FROM sessions WHERE name = :n"), {"n": name}).scalar_one()
            out = {"sessions": conn.execute(text("SELECT * FROM sessions WHERE id = :i"), {"i": sid}).all()}
            for table in ("turns", "engrams", "system_prompts"):
                out[table] = conn.execute(text(f"SELECT * FROM {table} WHERE session_id = :i ORDER BY id"),
                                          {"i": sid}).all()
            return out
    finally:
        engine.dispose()


def names(url: str) -> list[str]:
    store = open_store(url)
    try:
        with store.session() as db:
            return sorted(s.name for s in crud.list_sessions(db))
    finally:
        store.close()


def engram_of(url: str, name: str, cycle: int) -> torch.Tensor:
    store = open_store(url)
    try:
        with store.session() as db:
            chat = crud.get_session(db, name=name)
            row = next(r for r in crud.engram_rows(db, chat=chat) if r.cycle == cycle)
            return crud.load_engram(row)
    finally:
        store.close()


@pytest.fixture()
def three_turns(cli_run):
    systems = (["--system", "Be brief."], [], ["--system", "Be long."])  # a change as of turn 3
    texts = ("My cat is called Zorblat.", "We fly to Kyoto in April.", "The hotel is near Gion.")
    for system, msg in zip(systems, texts):
        code, _, err = cli_run("say", "-s", "trip", *SMALL, *system, msg)
        assert code == 0, err
    return cli_run


def test_fork_at_a_turn_starts_from_that_engram_and_leaves_the_source_byte_identical(three_turns, monkeypatch):
    run = three_turns
    before = rows(run.url, "trip")
    code, out, err = run("fork", "trip", "branch", "--at", "2")
    assert code == 0, err
    assert out.strip() == "forked session 'trip' after turn 2 as 'branch'"
    assert rows(run.url, "trip") == before

    fork = rows(run.url, "branch")
    assert [(t.index, t.user_text, t.reply_text) for t in fork["turns"]] == \
           [(t.index, t.user_text, t.reply_text) for t in before["turns"][:2]]
    assert [e.data for e in fork["engrams"]] == [e.data for e in before["engrams"][:2]]
    assert [(p.from_turn, p.text) for p in fork["system_prompts"]] == [(1, "Be brief.")]

    injected = []
    real = Engine.run_turn

    def spy(self, engram, user_text, **kw):
        injected.append((engram.clone(), kw.get("system")))
        return real(self, engram, user_text, **kw)

    monkeypatch.setattr(Engine, "run_turn", spy)
    code, _, err = run("say", "-s", "branch", *SMALL, "Where is the hotel?")
    assert code == 0, err
    (engram, system), = injected
    assert torch.equal(engram, engram_of(run.url, "trip", 2))
    assert not torch.equal(engram, engram_of(run.url, "trip", 3))  # the latest would have been wrong
    assert system == "Be brief."  # the prompt turn 2 had, not the source's change as of turn 3
    assert rows(run.url, "trip") == before  # a turn on the fork does not touch the source either
    assert [t.index for t in rows(run.url, "branch")["turns"]] == [1, 2, 3]


def test_fork_defaults_to_the_latest_turn_and_at_zero_is_empty(three_turns):
    run = three_turns
    assert run("fork", "trip", "whole")[0] == 0
    assert [t.index for t in rows(run.url, "whole")["turns"]] == [1, 2, 3]
    assert rows(run.url, "whole")["sessions"][0].cycle == 3
    assert [(p.from_turn, p.text) for p in rows(run.url, "whole")["system_prompts"]] == [(1, "Be brief."),
                                                                                          (3, "Be long.")]
    assert run("fork", "trip", "blank", "--at", "0")[0] == 0
    blank = rows(run.url, "blank")
    assert blank["turns"] == [] and blank["engrams"] == [] and blank["sessions"][0].cycle == 0
    assert [(p.from_turn, p.text) for p in blank["system_prompts"]] == [(1, "Be brief.")]  # as it was created


@pytest.mark.parametrize(("argv", "status", "message"), [
    (("fork", "trip", "taken"), 1, "a session named 'taken' already exists"),
    (("fork", "trip", "other", "--at", "4"), 1, "--at 4 is outside session 'trip', which has turns 1..3"),
    (("fork", "trip", "other", "--at", "-1"), 2, "argument --at: -1 is below 0"),
    (("fork", "trip", "other", "--at", "two"), 2, "argument --at: 'two' is not a whole number"),
    (("fork", "nope", "other"), 1, "no session named 'nope'"),
    (("fork", "trip", "../x"), 1, "session name contains '/'"),
    (("rename", "trip", "taken"), 1, "a session named 'taken' already exists"),
    (("rename", "nope", "other"), 1, "no session named 'nope'"),
    (("rename", "trip", "a b"), 1, "session name contains ' '"),
])
def test_refusals_are_one_line_and_change_nothing(three_turns, argv, status, message):
    run = three_turns
    assert run("fork", "trip", "taken")[0] == 0
    before = {n: rows(run.url, n) for n in ("trip", "taken")}
    code, out, err = run(*argv)
    errors = [ln for ln in err.splitlines() if ": error: " in ln]
    assert code == status and len(errors) == 1 and message in errors[0], err
    assert names(run.url) == ["taken", "trip"]
    assert {n: rows(run.url, n) for n in ("trip", "taken")} == before


def test_rename_keeps_every_row(three_turns):
    run = three_turns
    before = rows(run.url, "trip")
    code, out, err = run("rename", "trip", "kyoto")
    assert code == 0 and out.strip() == "renamed session 'trip' to 'kyoto'", err
    assert names(run.url) == ["kyoto"]
    after = rows(run.url, "kyoto")
    assert after["sessions"][0].name == "kyoto"
    assert {k: v for k, v in after.items() if k != "sessions"} == {k: v for k, v in before.items() if k != "sessions"}
    assert run("say", "-s", "kyoto", *SMALL, "Still there?")[0] == 0  # resumes under the new name
