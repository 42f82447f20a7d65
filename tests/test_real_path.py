"""The real path on the embedded model: `companion say` in separate processes.

These load SmolLM2-135M (converted once per test session, then from the cache).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from memory_store import crud, open_store

pytestmark = pytest.mark.slow


def run_cli(home, db, *args, input=None, timeout=300):
    env = {**os.environ, "COMPANION_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "companion", "--db", db, *args], env=env, input=input,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def db(tmp_path):
    return f"sqlite:///{tmp_path / 'c.db'}"


def stored_engrams(db_url, name):
    store = open_store(db_url)
    with store.session() as s:
        chat = crud.get_session(s, name=name)
        if chat is None:
            return None, []
        rows = crud.engram_rows(s, chat=chat)
        out = chat.cycle, [(r.cycle, crud.load_engram(r)) for r in rows]
    store.close()
    return out


def test_two_processes_resume_the_engram_bit_for_bit(embedded_lm, companion_home, db):
    # The seed recipe named explicitly: this test pins its layout (32 slots in front of the input).
    first = run_cli(companion_home, db, "say", "--session", "trip", "--json", "--max-new-tokens", "24",
                    "--recipe", "seed", "My dog is called Biscuit and I live in Lisbon.")
    assert first.returncode == 0, first.stderr
    r1 = json.loads(first.stdout)
    cycle, engrams = stored_engrams(db, "trip")
    assert cycle == 1 and engrams[0][1].shape == (32, 576)
    e1 = engrams[0][1].clone()

    # The second process must inject exactly the stored engram: recompute its
    # turn in-process from e1 and compare with what the process stored.
    second = run_cli(companion_home, db, "say", "--session", "trip", "--json", "--max-new-tokens", "24",
                     "Where do I live?")
    assert second.returncode == 0, second.stderr
    r2 = json.loads(second.stdout)
    cycle, engrams = stored_engrams(db, "trip")
    assert cycle == 2 and torch.equal(engrams[0][1], e1)  # turn 1's engram untouched

    from companion.engine.config import EngramConfig
    from companion.engine.cycle import Engine, chat_ids

    engine = Engine(embedded_lm, EngramConfig())
    again = engine.run_turn(e1, "Where do I live?", max_new_tokens=24)
    assert again.reply == r2["reply"]
    assert torch.allclose(again.engram, engrams[1][1], atol=1e-4)

    # prompt = slots + input, never the transcript
    n_input = len(chat_ids(embedded_lm.tokenizer, "Where do I live?"))
    assert r2["prompt_tokens"] == 32 + n_input
    # the incrementally kept transcript count equals templating the whole transcript
    msgs = [{"role": "user", "content": "My dog is called Biscuit and I live in Lisbon."},
            {"role": "assistant", "content": r1["reply"]}, {"role": "user", "content": "Where do I live?"}]
    full = embedded_lm.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    assert r2["transcript_tokens"] == len(full["input_ids"] if hasattr(full, "keys") else full)
    assert r1["prompt_tokens"] == len(chat_ids(embedded_lm.tokenizer, "My dog is called Biscuit and I live in Lisbon."))


def test_killed_turn_stores_nothing(companion_home, embedded_lm, db, tmp_path):
    ok = run_cli(companion_home, db, "say", "-s", "k", "--max-new-tokens", "8", "hello")
    assert ok.returncode == 0, ok.stderr
    before = stored_engrams(db, "k")
    env = {**os.environ, "COMPANION_HOME": str(companion_home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "companion", "--db", db, "say", "-s", "k", "--stream",
                             "--max-new-tokens", "400", "Write a long story about a lighthouse."],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait until generation is streaming, then kill mid-reply
    first = proc.stdout.read(1)
    assert first, proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    after = stored_engrams(db, "k")
    assert after[0] == before[0] == 1
    assert all(torch.equal(a[1], b[1]) for a, b in zip(after[1], before[1]))


def test_interrupted_turn_stores_nothing_and_exits_130(companion_home, embedded_lm, db):
    env = {**os.environ, "COMPANION_HOME": str(companion_home), "HF_HUB_OFFLINE": "1"}
    # A shell's background job (e.g. CI started with `&`) inherits SIGINT ignored, and
    # Python keeps it ignored; give the child the default action a terminal would.
    proc = subprocess.Popen([sys.executable, "-m", "companion", "--db", db, "say", "-s", "c", "--stream",
                             "--max-new-tokens", "400", "Tell me a long story."],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout.read(1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert stored_engrams(db, "c") == (None, [])


def test_sessions_json_show_and_delete(companion_home, embedded_lm, db):
    assert run_cli(companion_home, db, "say", "-s", "alpha", "--max-new-tokens", "8", "hi").returncode == 0
    listed = json.loads(run_cli(companion_home, db, "sessions", "--json").stdout)
    assert [s["name"] for s in listed] == ["alpha"]
    assert {"name", "turns", "model", "created", "last_used"} <= set(listed[0]) and listed[0]["turns"] == 1
    assert listed[0]["model"] == "SmolLM2-135M-Instruct"
    shown = run_cli(companion_home, db, "show", "alpha")
    assert shown.returncode == 0 and "#1 you: hi" in shown.stdout and "[ok]" in shown.stdout
    assert run_cli(companion_home, db, "delete", "alpha").returncode == 0
    assert json.loads(run_cli(companion_home, db, "sessions", "--json").stdout) == []
    gone = run_cli(companion_home, db, "show", "alpha")
    assert gone.returncode == 1 and "no session named 'alpha'" in gone.stderr


def test_resume_with_other_recipe_is_refused(companion_home, embedded_lm, db):
    assert run_cli(companion_home, db, "say", "-s", "r", "--max-new-tokens", "4", "hi").returncode == 0
    res = run_cli(companion_home, db, "say", "-s", "r", "--layer", "8", "hi again")
    assert res.returncode == 1
    assert "layer: 16 -> 8" in res.stderr and "new session" in res.stderr
    assert stored_engrams(db, "r")[0] == 1
    # with no recipe options the embedded model gets the default recipe itself (its weights fit)
    from companion.engine.recipes import DEFAULT

    store = open_store(db)
    with store.session() as s:
        assert json.loads(crud.get_session(s, name="r").engram_config)["recipe"] == DEFAULT
    store.close()


def test_repl_scripted_end_to_end(companion_home, embedded_lm, db):
    script = "My name is Ottoline.\n/stats\n/bogus\n/sessions\n/quit\n"
    res = run_cli(companion_home, db, "chat", "--session", "repl", "--max-new-tokens", "16", input=script)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "Chatting in session 'repl'" in out
    assert "cycle: 1" in out and "prompt_tokens:" in out and "engram_norm:" in out
    assert "unknown command /bogus" in out
    assert "repl" in out.split("/bogus")[-1]
    assert stored_engrams(db, "repl")[0] == 1


def test_forgetting_a_planted_fact_on_the_embedded_model_takes_it_out_of_the_answer(embedded_lm, tmp_path):
    """The default recipe recalls a fact from the engram alone; after `forget` of its word it does not."""
    from companion.app.memory import forget, memory_view
    from companion.app.service import Companion
    from memory_store import crud

    comp = Companion(db_url=f"sqlite:///{tmp_path / 'f.db'}", lm=embedded_lm, max_new_tokens=12, quiet=True)
    comp.say("f", "My cactus is called Vornelk.")

    def engram_only_answer() -> str:
        with comp.store.session() as db:
            chat = crud.get_session(db, name="f")
            engram, config = comp._latest(db, chat), comp._recipe_for(chat)
        return comp.engine(config).run_turn(engram, "What is my cactus called?", max_new_tokens=12,
                                            update=False).reply

    assert "Vornelk" in engram_only_answer()
    assert "Vornelk" in [w.text for w in memory_view(comp.store, "f").words]
    forget(comp.store, "f", text="Vornelk")
    assert "Vornelk" not in [w.text for w in memory_view(comp.store, "f").words]
    assert "vornelk" not in engram_only_answer().lower()
    comp.close()


def test_a_scripted_chat_shows_memory_forgets_undoes_and_retries(embedded_lm, companion_home, tmp_path, monkeypatch):
    """`companion chat` on the embedded model, typed lines from a script: /memory after a fact, the answer
    before and after /forget of it, /undo and /retry, and the bad values answered in one line."""
    import functools
    import io

    from companion.app import cli
    from companion.app.repl import run_repl
    from companion.app.service import Companion

    monkeypatch.setenv("COMPANION_HOME", str(companion_home))
    monkeypatch.setattr(cli, "Companion", functools.partial(Companion, lm=embedded_lm, quiet=True))
    buf = io.StringIO()
    monkeypatch.setattr(cli, "run_repl", functools.partial(run_repl, out=buf))
    lines = iter(["My cactus is called Vornelk.", "/memory", "What is my cactus called?", "/undo",
                  "/forget Vornelk", "/forget Vornelk", "/memory", "What is my cactus called?", "/retry",
                  "/undo", "/undo", "/undo"])

    def read():
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr(cli, "prompt_reader", lambda _path: read)
    db = f"sqlite:///{tmp_path / 'chat.db'}"
    assert cli.main(["--db", db, "chat", "-s", "walk", "--max-new-tokens", "12"]) == 0
    out = buf.getvalue()
    # replies are not echoed with their question, so the transcript is cut at what the commands print
    before_forget, after_forget = out.split("forgot Vornelk (turn 1)", 1)
    assert before_forget.count("Vornelk") >= 2  # in /memory, and in the reply from the engram alone
    assert "nothing in session 'walk'" in after_forget  # the second /forget finds nothing
    shown, rest = after_forget.split("(asked: Vornelk)", 1)  # the second /memory lists the forget
    answer, retried = rest.split("[cycle 2", 1)[0], rest.split("[cycle 2", 1)[1].split("retried:", 1)[0]
    assert answer.strip() and "vornelk" not in answer.lower() and "vornelk" not in retried.lower()
    assert "retried: cycle 2" in out and "undid turn 2" in out and "undid turn 1" in out
    assert "nothing to undo: session 'walk' has no turns" in out
