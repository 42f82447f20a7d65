"""Bad input, end to end through the `companion` command: each kind gets a clear
one-line message and a non-zero exit (1, or 2 for usage errors), no traceback,
nothing stored and the existing session unchanged.

Run as a script to print the table for docs/RESULTS.md (Reliability):

    HF_HUB_OFFLINE=1 .venv/bin/python tests/test_bad_input.py
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from companion.engine.recipes import DEFAULT, PORTABLE  # noqa: E402
from memory_store import crud, open_store  # noqa: E402

KEEP = "keep"


@dataclass
class Ctx:
    home: Path  # data folder with the converted model cache
    tmp: Path
    db: str  # the shared database holding session KEEP (one turn)

    def db_copy(self, name: str) -> tuple[str, Path]:
        path = self.tmp / f"{name}.db"
        shutil.copy(Path(self.db.removeprefix("sqlite:///")), path)
        return f"sqlite:///{path}", path


@dataclass
class Case:
    kind: str
    make: Callable[[Ctx], dict]  # -> {"args": [...], "stdin": bytes, "env": {...}, "db": url}
    expect: str  # in the one-line message (stderr; stdout for REPL cases)
    code: int = 1
    stream: str = "stderr"
    loads_model: bool = False
    tags: set = field(default_factory=set)


def _say(*args, stdin=None, **kw):
    return lambda ctx: {"args": ["say", *args], "stdin": stdin, **kw}


def _newer_schema(ctx: Ctx) -> dict:
    url, path = ctx.db_copy("future")
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    return {"args": ["sessions"], "db": url}


def _damaged_engram(ctx: Ctx) -> dict:
    url, _ = ctx.db_copy("damaged")
    from sqlalchemy import select, update

    from memory_store import Engram

    store = open_store(url)
    with store.session() as s, s.begin():
        row = s.scalars(select(Engram)).first()
        data = bytearray(row.data)
        data[-1] ^= 0xFF
        s.execute(update(Engram).where(Engram.id == row.id).values(data=bytes(data)))
    store.close()
    return {"args": ["say", "-s", KEEP, "do you remember?"], "db": url}


def _unwritable_home(ctx: Ctx) -> dict:
    # Root ignores permission bits, so the unwritable folder is one that cannot
    # exist: a path below a regular file (as a non-root user, also a 0500 folder).
    blocker = ctx.tmp / "a-file"
    blocker.write_text("not a folder")
    return {"args": ["sessions"], "env": {"COMPANION_HOME": str(blocker / "companion"), "COMPANION_DB": ""},
            "db": None}


def _unwritable_db_folder(ctx: Ctx) -> dict:
    blocker = ctx.tmp / "b-file"
    blocker.write_text("not a folder")
    return {"args": ["sessions"], "db": f"sqlite:///{blocker / 'sub' / 'c.db'}"}


def _damaged_gguf(ctx: Ctx) -> dict:
    from companion.engine.loading import embedded_gguf

    bad = ctx.tmp / "truncated.gguf"
    with embedded_gguf().open("rb") as f:
        bad.write_bytes(f.read(3_000_000))  # the header and part of the first tensor
    return {"args": ["say", "-s", "new1", "--model", str(bad), "hi"]}


def _not_gguf(ctx: Ctx) -> dict:
    bad = ctx.tmp / "random.gguf"
    bad.write_bytes(os.urandom(200))
    return {"args": ["say", "-s", "new1", "--model", str(bad), "hi"]}


def _garbage_import(ctx: Ctx) -> dict:
    bad = ctx.tmp / "garbage.companion"
    bad.write_bytes(b"\x80\x04\x95 a pickle is not a session file")
    return {"args": ["import", str(bad)]}


def _export_over_file(ctx: Ctx) -> dict:
    there = ctx.tmp / "exists.companion"
    there.write_text("precious")
    return {"args": ["export", KEEP, str(there)]}


def _undo_emptied(ctx: Ctx) -> dict:
    url, _ = ctx.db_copy("emptied")
    from companion.app.memory import undo

    store = open_store(url)
    undo(store, KEEP)  # the copy's one turn: the session exists with no turns left
    store.close()
    return {"args": ["undo", KEEP], "db": url}


LONG = ("word " * 9000).encode()

CASES = [
    Case("empty input", _say("-s", KEEP, ""), "input is empty"),
    Case("whitespace-only input", _say("-s", KEEP, "  \t  "), "input is empty"),
    Case("empty standard input", _say("-s", KEEP, stdin=b""), "input is empty"),
    Case("input longer than the context window", _say("-s", KEEP, stdin=LONG),
         "exceeds the 8192-token context window", loads_model=True),
    Case("NUL byte (from a pipe)", _say("-s", KEEP, stdin=b"hello\x00world"), "input contains a NUL byte"),
    Case("control characters", _say("-s", KEEP, "hi \x1b[31mred\x07"), "control characters (U+0007, U+001B)"),
    Case("invalid UTF-8 from a pipe", _say("-s", KEEP, stdin=b"caf\xe9 au lait"),
         "standard input is not valid UTF-8 (byte 3)"),
    Case("unknown slash command (REPL)", lambda c: {"args": ["chat", "-s", KEEP], "stdin": b"/bogus\n/quit\n"},
         "unknown command /bogus; /help lists the commands", code=0, stream="stdout"),
    Case("invalid UTF-8 line in the REPL", lambda c: {"args": ["chat", "-s", KEEP], "stdin": b"caf\xe9\n/quit\n"},
         "error: that line is not valid UTF-8 (byte 3); nothing was sent", code=0, stream="stdout"),
    Case("session name with a slash", _say("-s", "a/b", "hi"), "session name contains '/'"),
    Case("session name with quotes", _say("-s", "it's", "hi"), "session name contains \"'\""),
    Case("session name '..'", _say("-s", "..", "hi"), "must start with a letter or digit"),
    Case("session name containing '..'", _say("-s", "a..b", "hi"), "must not contain '..'"),
    Case("very long session name", _say("-s", "x" * 300, "hi"), "too long (300 characters, at most 64)"),
    Case("empty session name", _say("-s", "", "hi"), "session name is empty"),
    Case("unwritable data folder", _unwritable_home, "cannot use the data folder"),
    Case("database folder that cannot be made", _unwritable_db_folder, "is a file, not a folder"),
    Case("database from a newer schema", _newer_schema, "newer than this Companion understands"),
    Case("unknown database URL scheme", lambda c: {"args": ["sessions"], "db": "nonsense://x"},
         "cannot use database URL nonsense://x"),
    Case("missing GGUF", _say("-s", "new1", "--model", "/nonexistent/model.gguf", "hi"), "no GGUF file at"),
    Case("damaged (truncated) GGUF", _damaged_gguf, "cannot load model", loads_model=True),
    Case("file that is not a GGUF", _not_gguf, "not a GGUF file", loads_model=True),
    Case("unknown --model", _say("-s", "new1", "--model", "no-such-org/no-such-model", "hi"),
         "cannot load model 'no-such-org/no-such-model'", loads_model=True),
    Case("layer beyond the model's depth", _say("-s", "new1", "--layer", "99", "hi"),
         "layer 99 is beyond this model's depth: it has 30 blocks", loads_model=True),
    Case("slots out of range", _say("-s", "new1", "--slots", "0", "hi"), "slots must be an integer in 1..4096"),
    Case("--max-new-tokens not positive", _say("-s", KEEP, "--max-new-tokens", "-5", "hi"),
         "argument --max-new-tokens: -5 is out of range", code=2),
    Case("other recipe for an existing session", _say("-s", KEEP, "--layer", "8", "hi"),
         # --layer alone means the portable recipe at that layer (the session has the default)
         f"different engram recipe (layer: 16 -> 8; recipe: {DEFAULT} -> {PORTABLE})"),
    Case("damaged engram in the session", _damaged_engram, "refusing to inject a damaged engram: session 'keep' cycle 1"),
    Case("show an unknown session", lambda c: {"args": ["show", "nobody"]}, "no session named 'nobody'"),
    Case("import a file that is not an export", _garbage_import, "not a readable safetensors file"),
    Case("export over an existing file", _export_over_file, "already exists; pass --force"),
    Case("unknown command", lambda c: {"args": ["frobnicate"]}, "invalid choice: 'frobnicate'", code=2),
    Case("--temperature below 0", _say("-s", KEEP, "--temperature", "-1", "hi"),
         "argument --temperature: -1 is below 0", code=2),
    Case("--top-p above 1", _say("-s", KEEP, "--temperature", "1", "--top-p", "1.5", "hi"),
         "argument --top-p: 1.5 is out of range (above 0, at most 1)", code=2),
    Case("--seed without --temperature", _say("-s", KEEP, "--seed", "3", "hi"),
         "--top-p and --seed only apply to sampling; give --temperature above 0 as well"),
    Case("--recall out of range", _say("-s", KEEP, "--recall", "10000", "hi"),
         "argument --recall: 10000 is out of range (0..20 stored turns)", code=2),
    Case("fork onto an existing name", lambda c: {"args": ["fork", KEEP, KEEP]},
         "a session named 'keep' already exists"),
    Case("fork --at beyond the last turn", lambda c: {"args": ["fork", KEEP, "k2", "--at", "5"]},
         "--at 5 is outside session 'keep', which has turns 1..1"),
    Case("rename an unknown session", lambda c: {"args": ["rename", "nobody", "k2"]}, "no session named 'nobody'"),
    Case("forget words the memory does not hold", lambda c: {"args": ["forget", KEEP, "Brindlewick"]},
         "nothing in session 'keep''s memory came from 'Brindlewick'"),
    Case("forget --turn beyond the last turn", lambda c: {"args": ["forget", KEEP, "--turn", "5"]},
         "there is no turn 5"),
    Case("forget with nothing to forget", lambda c: {"args": ["forget", KEEP]}, "give the words to forget"),
    Case("memory of an unknown session", lambda c: {"args": ["memory", "nobody"]}, "no session named 'nobody'"),
    Case("undo on a session with no turns", _undo_emptied, "nothing to undo: session 'keep' has no turns"),
    Case("retry an unknown session", lambda c: {"args": ["retry", "nobody"]}, "nothing to retry"),
    Case("search for no word at all", lambda c: {"args": ["search", "("]}, "give at least one word"),
    Case("/forget of a word not in memory (REPL)",
         lambda c: {"args": ["chat", "-s", KEEP], "stdin": b"/forget Brindlewick\n/quit\n"},
         "error: nothing in session 'keep'", code=0, stream="stdout", loads_model=True),
    Case("/history with a bad count (REPL)", lambda c: {"args": ["chat", "-s", KEEP], "stdin": b"/history x\n/quit\n"},
         "error: /history takes a number of exchanges from 1 to 1000, not 'x'", code=0, stream="stdout"),
]


def run_case(case: Case, ctx: Ctx):
    spec = case.make(ctx)
    db = spec.get("db", ctx.db)
    env = {**os.environ, "COMPANION_HOME": str(ctx.home), "HF_HUB_OFFLINE": "1", **spec.get("env", {})}
    env.pop("COMPANION_CRASH_AT", None)
    if not env.get("COMPANION_DB"):
        env.pop("COMPANION_DB", None)
    argv = [sys.executable, "-m", "companion", *(["--db", db] if db else []), *spec["args"]]
    res = subprocess.run(argv, env=env, input=spec.get("stdin") or b"", capture_output=True, timeout=600)
    out, err = res.stdout.decode(errors="replace"), res.stderr.decode(errors="replace")
    # Progress bars (model loading) may precede it; the message is the last line.
    lines = [ln for ln in (out if case.stream == "stdout" else err).splitlines() if ln.strip()]
    if case.stream == "stdout":
        message = next((ln for ln in lines if case.expect in ln), lines[-1] if lines else "")
    else:
        message = lines[-1] if lines else ""
    return res.returncode, message, out, err


def fingerprint(url: str) -> str:
    """Digest of every session, turn and engram row: 'nothing lost, nothing added'."""
    store = open_store(url)
    h = hashlib.sha256()
    with store.session() as s:
        for summary in crud.list_sessions(s):
            chat = crud.get_session(s, name=summary.name)
            h.update(f"{chat.name}|{chat.cycle}|{chat.model_fingerprint}|{chat.engram_config}".encode())
            for t in crud.turns(s, chat=chat):
                h.update(f"{t.index}|{t.user_text}|{t.reply_text}".encode())
            for r in crud.engram_rows(s, chat=chat):
                h.update(r.data + r.sha256.encode())
    store.close()
    return h.hexdigest()


def make_keep(home: Path, tmp: Path, lm=None) -> Ctx:
    db = f"sqlite:///{tmp / 'keep.db'}"
    if lm is not None:
        from companion.app.service import Companion

        comp = Companion(db_url=db, lm=lm, max_new_tokens=4)
        comp.say(KEEP, "Remember: my dog is called Biscuit.")
        comp.close()
    else:
        env = {**os.environ, "COMPANION_HOME": str(home), "HF_HUB_OFFLINE": "1"}
        subprocess.run([sys.executable, "-m", "companion", "--db", db, "say", "-s", KEEP, "--max-new-tokens", "4",
                        "Remember: my dog is called Biscuit."], env=env, check=True, capture_output=True)
    return Ctx(home=home, tmp=tmp, db=db)


@pytest.fixture(scope="module")
def ctx(embedded_lm, companion_home, tmp_path_factory):
    return make_keep(companion_home, tmp_path_factory.mktemp("bad-input"), embedded_lm)


def test_at_least_fifteen_kinds():
    assert len({c.kind for c in CASES}) == len(CASES) >= 15


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_bad_input_is_refused_clearly_and_loses_nothing(case: Case, ctx: Ctx):
    before = fingerprint(ctx.db)
    code, message, out, err = run_case(case, ctx)
    assert code == case.code, (out, err)
    assert "Traceback" not in err, err
    assert case.expect in message, (message, err)
    if case.stream == "stderr":
        # exactly one error line (argparse adds its usage line before it for exit 2, and
        # names the subcommand: "companion say: error: ...")
        error_line = re.compile(r"^companion( \w+)?: error: ")
        assert error_line.match(message), message
        assert sum(bool(error_line.match(ln)) for ln in err.splitlines()) == 1, err
    assert fingerprint(ctx.db) == before  # the existing session unchanged, nothing stored


if __name__ == "__main__":
    home = Path(os.environ.get("COMPANION_HOME", Path.home() / ".companion"))
    with tempfile.TemporaryDirectory() as tmp:
        c = make_keep(home, Path(tmp))
        print(f"Session {KEEP!r} (one turn) in a fresh database; each row is one `companion` run against it.\n")
        print("| # | bad input | exit | message | store unchanged |")
        print("|---|---|---|---|---|")
        for i, case in enumerate(CASES, 1):
            before = fingerprint(c.db)
            code, message, _out, _err = run_case(case, c)
            same = fingerprint(c.db) == before
            shown = message.replace("|", "\\|")
            shown = f"`` {shown} ``" if "`" in shown else f"`{shown}`"
            print(f"| {i} | {case.kind} | {code} | {shown} | {'yes' if same else 'NO'} |", flush=True)
