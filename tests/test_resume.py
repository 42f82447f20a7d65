"""Resuming like a person expects: the header, /history, the cut notice and /more, relative dates.

A scripted REPL session through the real CLI (companion.app.cli.main) on the tiny model.
"""

from __future__ import annotations

import functools
import io
import json
from datetime import timedelta

from sqlalchemy import update

from companion.app import cli, repl
from companion.app.resume import SHORT, shorten
from memory_store import ChatSession, crud, open_store
from memory_store.models import utcnow
from tests.test_repl import scripted

SMALL = ["--layer", "2", "--slots", "4", "--max-new-tokens", "6"]
LONG = "We are planning a trip to Kyoto in April with my sister, " * 6  # longer than a header line


def chat(cli_run, monkeypatch, lines, *argv):
    """`companion chat` reading `lines`; returns (status, REPL transcript, stderr)."""
    out = io.StringIO()
    monkeypatch.setattr(cli, "prompt_reader", lambda _path: scripted(lines))
    monkeypatch.setattr(cli, "run_repl", functools.partial(repl.run_repl, out=out))
    code, _, err = cli_run("chat", *argv)
    return code, out.getvalue(), err


def stored_turns(url, name):
    store = open_store(url)
    try:
        with store.session() as db:
            chat_ = crud.get_session(db, name=name)
            return [(t.index, t.user_text, t.reply_text) for t in crud.turns(db, chat=chat_)]
    finally:
        store.close()


def age(url, name, *, created_days, used_days):
    store = open_store(url)
    try:
        with store.session() as db, db.begin():
            now = utcnow()
            db.execute(update(ChatSession).where(ChatSession.name == name).values(
                created_at=now - timedelta(days=created_days), last_used_at=now - timedelta(days=used_days)))
    finally:
        store.close()


def test_shorten_is_one_line_on_a_word_boundary():
    assert shorten("a  b\nc") == "a b c"
    cut = shorten(LONG)
    assert len(cut) <= SHORT and cut.endswith("...") and LONG.startswith(cut[:-3])


def test_scripted_resume_shows_header_history_cut_notice_and_more(cli_run, monkeypatch):
    for text in ("My sister's name is Ottoline.", LONG):
        code, _, err = cli_run("say", "-s", "trip", *SMALL, text)
        assert code == 0, err
        assert "[cut at 6 tokens: `companion say -s trip --more` continues]" in err
    age(cli_run.url, "trip", created_days=3, used_days=1)

    code, out, err = chat(cli_run, monkeypatch,
                          ["/history", "/history 1", "/history x", "/history 0", "Where do we go first?", "/more"],
                          "-s", "trip", *SMALL, "--temperature", "1", "--seed", "5")
    assert code == 0, err
    header, rest = out.split("\n", 1)[1].split("\n#1 you:", 1)
    assert header.splitlines()[:2] == ["Resuming 'trip': 2 turns, created 3 days ago, last used yesterday",
                                       "model tiny-llama, recipe select-sticky: layer 2, 4 slots"]
    assert f"last: #2 you: {shorten(LONG)}" in header
    history, rest = ("#1 you:" + rest).split("error:", 1)
    # /history (default 5) shows both exchanges, /history 1 only the last.
    assert history.count("#1 you: My sister's name is Ottoline.") == 1 and history.count("#2 you:") == 2
    assert rest.startswith(" /history takes a number of exchanges from 1 to 1000, not 'x'")
    assert "not '0'" in rest
    assert rest.count("[cut at 6 tokens: /more continues]") == 2  # the turn, then its continuation

    turns = stored_turns(cli_run.url, "trip")
    assert [t[0] for t in turns] == [1, 2, 3, 4]
    assert turns[2][1] == "Where do we go first?"
    cut_reply = turns[2][2]
    assert cut_reply.strip()  # sampled, so real text to continue
    # /more is a turn of its own quoting the end of the cut reply; the cut turn stays as stored.
    assert turns[3][1].startswith("Your last reply was cut off.") and cut_reply.strip()[-20:] in turns[3][1]


def test_more_without_a_reply_and_history_of_a_new_session(cli_run, monkeypatch):
    code, out, _ = chat(cli_run, monkeypatch, ["/history", "/more"], "-s", "fresh", *SMALL)
    assert code == 0
    assert "Resuming" not in out  # a new session has nothing to resume
    assert "no turns yet" in out and "error: nothing to continue: session 'fresh' has no reply yet" in out
    code, _, err = cli_run("say", "-s", "fresh", "--more", *SMALL)
    assert code == 1 and err.strip() == "companion: error: nothing to continue: session 'fresh' has no reply yet"


def test_sessions_list_relative_dates_and_json_keeps_its_fields(cli_run):
    cli_run("say", "-s", "old", *SMALL, "hello")
    cli_run("say", "-s", "new", *SMALL, "hello")
    age(cli_run.url, "old", created_days=10, used_days=3)
    code, out, _ = cli_run("sessions")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("new") and "created just now" in lines[0] and "last used just now" in lines[0]
    assert "created 10 days ago" in lines[1] and "last used 3 days ago" in lines[1]
    code, out, _ = cli_run("sessions", "--json")
    items = {s["name"]: s for s in json.loads(out)}
    assert set(items["old"]) >= {"name", "turns", "model", "created", "last_used", "cycle"}
    assert (items["old"]["created_ago"], items["old"]["last_used_ago"]) == ("10 days ago", "3 days ago")
