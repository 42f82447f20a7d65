"""Two `companion serve` processes over one PostgreSQL database (tests/test_postgres.py's server).

Needs COMPANION_TEST_PG_URL, which .ci/run sets after starting a throwaway
cluster on loopback; skipped without it. The store's cycle guard is what keeps
two servers from interleaving or duplicating a session's turns: the later writer
is refused, and the server answers it with a 409.
"""

from __future__ import annotations

import os
import threading

import pytest
from serving import Server, save_tiny_model
from sqlalchemy import create_engine, text

PG_URL = os.environ.get("COMPANION_TEST_PG_URL")
pytestmark = pytest.mark.skipif(
    not PG_URL, reason="COMPANION_TEST_PG_URL is not set (.ci/run starts PostgreSQL and sets it)"
)


def _reset(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def test_two_servers_on_one_database_never_interleave_a_session(tokenizer, tmp_path):
    _reset(PG_URL)
    model = save_tiny_model(tokenizer, tmp_path / "model")
    a = Server(tmp_path / "a", model, "--keep-alive", "-1", db=PG_URL)
    try:
        b = Server(tmp_path / "b", model, "--keep-alive", "-1", db=PG_URL)
        try:
            assert a.chat("shared", "Told to server A.", max_tokens=4)[1]["companion"]["cycle"] == 1
            assert b.chat("shared", "Told to server B.", max_tokens=4)[1]["companion"]["cycle"] == 2  # B sees A's turn
            results, start = {}, threading.Barrier(2)

            def send(name, srv):
                start.wait(30)
                results[name] = srv.chat("shared", f"At once, via {name}.", max_tokens=300)

            threads = [threading.Thread(target=send, args=(n, s)) for n, s in (("a", a), ("b", b))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(300)
            codes = sorted(r[0] for r in results.values())
            assert codes == [200, 409], {k: (r[0], r[1]) for k, r in results.items()}
            loser = next(r for r in results.values() if r[0] == 409)
            assert loser[1]["error"]["code"] == "session_moved_on" and "send it again" in loser[1]["error"]["message"]
            winner = next(n for n, r in results.items() if r[0] == 200)
            users = [t["user"] for t in a.turns("shared")]
            assert users == ["Told to server A.", "Told to server B.", f"At once, via {winner}."]
            assert [t["user"] for t in b.turns("shared")] == users
        finally:
            b.stop()
    finally:
        a.stop()
