"""Crash safety: a real `companion say` SIGKILLed at every point of a turn.

Named points use the COMPANION_CRASH_AT test hook in companion/app/service.py
(the process kills itself there, so each point is hit exactly); random points
are SIGKILLs sent from outside after a random delay. After every kill: the
store opens and lists its sessions (`sessions --json` as a real process
at a few of the points, the same query in-process at the others, to spare the CPU), cycle == turns == engrams with indices
1..cycle, every engram verifies, earlier turns are byte-for-byte unchanged,
and a following `say` resumes the session.

Set COMPANION_RESULTS_DIR to also write what happened as JSON (for docs).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from companion.app.crashpoints import CRASH_POINTS
from memory_store import crud, open_store

pytestmark = pytest.mark.slow
SESSION = "crashy"
LONG_PROMPT = "Write a long story about a lighthouse keeper and her cat."


def _env(home, **extra):
    env = {**os.environ, "COMPANION_HOME": str(home), "HF_HUB_OFFLINE": "1", **extra}
    env.pop("COMPANION_CRASH_AT", None)
    env.update(extra)
    return env


def run_cli(home, db, *args, crash=None, timeout=300):
    extra = {"COMPANION_CRASH_AT": crash} if crash else {}
    return subprocess.run([sys.executable, "-m", "companion", "--db", db, *args], env=_env(home, **extra),
                          capture_output=True, text=True, timeout=timeout)


def snapshot(db_url: str, name: str):
    """(cycle, {index: digest of turn text + engram bytes}); raises if anything is inconsistent."""
    store = open_store(db_url)
    try:
        with store.session() as s:
            chat = crud.get_session(s, name=name)
            if chat is None:
                assert not crud.list_sessions(s) or name not in [x.name for x in crud.list_sessions(s)]
                return None, {}
            turns = crud.turns(s, chat=chat)
            rows = crud.engram_rows(s, chat=chat)
            # no half-turn: the version, the turns and the engrams agree exactly
            assert [t.index for t in turns] == list(range(1, chat.cycle + 1))
            assert [r.cycle for r in rows] == list(range(1, chat.cycle + 1))
            digests = {}
            for t, r in zip(turns, rows):
                crud.load_engram(r, where=f"cycle {r.cycle}")  # checksum, shape, dtype, finite
                assert r.turn_id == t.id
                digests[t.index] = hashlib.sha256(t.user_text.encode() + b"\0" + t.reply_text.encode()
                                                  + b"\0" + r.data).hexdigest()
            if chat.cycle:
                crud.latest_engram(s, chat=chat)
            return chat.cycle, digests
    finally:
        store.close()


def listed(home, db, cli: bool):
    """`sessions --json` (a real process when cli, else the same query in-process: CPU is scarce)."""
    if cli:
        out = run_cli(home, db, "sessions", "--json")
        assert out.returncode == 0, out.stderr
        return {s["name"]: s for s in json.loads(out.stdout)}
    store = open_store(db)
    try:
        with store.session() as s:
            return {x.name: x.__dict__ for x in crud.list_sessions(s)}
    finally:
        store.close()


def check_after_kill(home, db, before_cycle, before_digests, *, committed_ok: bool, cli: bool = False):
    """The store opens and lists; the session is at its last complete turn. Returns the new cycle."""
    names = listed(home, db, cli)
    cycle, digests = snapshot(db, SESSION)
    cycle = cycle or 0
    allowed = {before_cycle, before_cycle + 1} if committed_ok else {before_cycle}
    assert cycle in allowed, f"cycle {cycle}, expected one of {allowed}"
    for index, digest in before_digests.items():
        assert digests[index] == digest, f"turn {index} changed"
    if cycle:
        assert names[SESSION]["turns"] == names[SESSION]["cycle"] == cycle
    else:
        assert SESSION not in names
    return cycle, digests


def resume(home, db, cycle):
    ok = run_cli(home, db, "say", "-s", SESSION, "--json", "--max-new-tokens", "6", f"turn after crash {cycle}")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["cycle"] == cycle + 1
    return snapshot(db, SESSION)


def _record(name: str, rows: list[dict]) -> None:
    out = os.environ.get("COMPANION_RESULTS_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{name}.json").write_text(json.dumps(rows, indent=2))


def test_sigkill_at_every_named_point(embedded_lm, companion_home, tmp_path):
    db = f"sqlite:///{tmp_path / 'c.db'}"
    rows = []
    # The very first turn of a new session killed mid-commit: no session row at all.
    dead = run_cli(companion_home, db, "say", "-s", SESSION, "--max-new-tokens", "6", "first", crash="mid-commit")
    assert dead.returncode == -signal.SIGKILL, dead.stderr
    cycle, digests = check_after_kill(companion_home, db, 0, {}, committed_ok=False, cli=True)
    assert cycle == 0
    rows.append({"point": "mid-commit (first turn of a new session)", "exit": dead.returncode,
                 "cycle_before": 0, "cycle_after": 0, "resumed": True})
    cycle, digests = resume(companion_home, db, 0)

    for point in CRASH_POINTS:
        before = cycle
        dead = run_cli(companion_home, db, "say", "-s", SESSION, "--max-new-tokens", "12", LONG_PROMPT, crash=point)
        assert dead.returncode == -signal.SIGKILL, f"{point}: {dead.returncode} {dead.stderr[-500:]}"
        # after-commit: the turn was complete and committed, so it stays; every other point leaves nothing
        cycle, digests = check_after_kill(companion_home, db, before, digests, committed_ok=point == "after-commit",
                                          cli=point in ("mid-commit", "after-commit"))
        if point == "after-commit":
            assert cycle == before + 1
        else:
            assert cycle == before, point
        after = cycle
        cycle, digests = resume(companion_home, db, cycle)
        rows.append({"point": point, "exit": dead.returncode, "cycle_before": before, "cycle_after": after,
                     "resumed": True})
    _record("crash_points", rows)


def test_sigkill_at_random_times_from_outside(embedded_lm, companion_home, tmp_path):
    db = f"sqlite:///{tmp_path / 'c.db'}"
    t0 = time.monotonic()
    first = run_cli(companion_home, db, "say", "-s", SESSION, "--max-new-tokens", "12", LONG_PROMPT)
    assert first.returncode == 0, first.stderr
    span = time.monotonic() - t0  # one whole turn, start-up included
    cycle, digests = snapshot(db, SESSION)
    seed = int(os.environ.get("COMPANION_CRASH_SEED", "20251124"))
    rng = random.Random(seed)
    rows = []
    for attempt in range(4):
        before = cycle
        delay = rng.uniform(0.2, span * 1.1)
        proc = subprocess.Popen([sys.executable, "-m", "companion", "--db", db, "say", "-s", SESSION,
                                 "--max-new-tokens", "12", LONG_PROMPT], env=_env(companion_home),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=delay)
            killed = False
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            killed = True
        cycle, digests = check_after_kill(companion_home, db, before, digests, committed_ok=True, cli=attempt == 0)
        after = cycle
        cycle, digests = resume(companion_home, db, cycle)
        rows.append({"delay_s": round(delay, 2), "turn_s": round(span, 2), "killed": killed,
                     "exit": proc.returncode, "cycle_before": before, "cycle_after": after, "resumed": True})
    _record("random_kills", [{"seed": seed}] + rows)


def test_sigkill_inside_forget_undo_and_retry_leaves_the_session_whole(embedded_lm, companion_home, tmp_path):
    """Each memory edit killed inside its transaction (all rows written, before COMMIT) leaves the session as
    it was; run again without the kill, it does what it says."""
    from companion.app.crashpoints import EDIT_CRASH_POINTS

    db = f"sqlite:///{tmp_path / 'c.db'}"
    for text in ("My cactus is called Vornelk.", "I went swimming today."):
        assert run_cli(companion_home, db, "say", "-s", SESSION, "--max-new-tokens", "6", text).returncode == 0
    cycle, digests = snapshot(db, SESSION)
    commands = {"forget-mid-commit": ("forget", SESSION, "--turn", "1"), "undo-mid-commit": ("undo", SESSION),
                # sampled, so the new reply differs from the greedy one it replaces
                "retry-mid-commit": ("retry", SESSION, "--max-new-tokens", "6", "--temperature", "1.5", "--seed", "7")}
    for point in EDIT_CRASH_POINTS:
        dead = run_cli(companion_home, db, *commands[point], crash=point)
        assert dead.returncode == -signal.SIGKILL, f"{point}: {dead.returncode} {dead.stderr[-500:]}"
        assert snapshot(db, SESSION) == (cycle, digests), point  # nothing of the edit, nothing else lost
        ok = run_cli(companion_home, db, *commands[point])
        assert ok.returncode == 0, ok.stderr
        after, now = snapshot(db, SESSION)
        if point == "undo-mid-commit":
            assert after == cycle - 1 and now == {i: d for i, d in digests.items() if i < cycle}
        else:  # forget rewrites the latest engram, retry the latest turn: earlier turns untouched
            assert after == cycle and {i: d for i, d in now.items() if i < cycle} == \
                {i: d for i, d in digests.items() if i < cycle} and now[cycle] != digests[cycle]
        cycle, digests = after, now
    cycle, digests = resume(companion_home, db, cycle)
