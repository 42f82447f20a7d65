"""Shaping replies from the CLI on the tiny model: --system, sampling, --recall, and their refusals.

What reaches the model is read at its input embeddings (the token ids of each
turn's prompt), not from what the code meant to send.
"""

from __future__ import annotations

import json

import pytest
import torch

from companion.app import recall as product_recall
from companion.app.recall import RECALL_CHARS
from companion.app.resume import resume_header
from companion.app.service import Companion
from companion.engine import retrieval
from companion.engine.config import EngramConfig
from companion.engine.cycle import Engine
from companion.engine.sampling import Sampling, pick
from companion.eval import modes as harness_modes
from companion.eval.modes import Memory, make_modes, with_context
from memory_store import crud, open_store

SMALL = ["--layer", "2", "--slots", "4", "--max-new-tokens", "8"]
DEFAULT_SYSTEM = "SmolLM"  # the embedded tokenizer's template names itself when no system prompt is given


@pytest.fixture()
def prompts(tiny_lm):
    """The decoded prompt of every forward pass that starts a turn (decoding steps feed 1-2 tokens)."""
    fed: list[str] = []

    def hook(_module, args, _out):
        if args[0].shape[-1] > 8:
            fed.append(tiny_lm.tokenizer.decode(args[0][0].tolist()))

    handle = tiny_lm.model.get_input_embeddings().register_forward_hook(hook)
    yield fed
    handle.remove()


def say(run, *argv):
    code, out, err = run("say", *SMALL, "--json", *argv)
    assert code == 0, err
    return json.loads(out)


def show(run, name):
    code, out, err = run("show", name, "--json")
    assert code == 0, err
    return json.loads(out)


def test_system_prompt_is_stored_applied_every_turn_and_changed_only_explicitly(cli_run, prompts):
    say(cli_run, "-s", "p", "--system", "You are a pirate named Quill.", "hello there")
    say(cli_run, "-s", "p", "where is the ship")  # resumed without --system: keeps the pirate
    say(cli_run, "-s", "p", "--system", "You are a poet.", "a verse please")
    say(cli_run, "-s", "p", "--system", "", "and now?")  # cleared: the template's default again
    turns = [next(p for p in prompts if text in p) for text in ("hello there", "where is the ship",
                                                                "a verse please", "and now?")]
    assert ["pirate named Quill" in p for p in turns] == [True, True, False, False]
    assert ["You are a poet." in p for p in turns] == [False, False, True, False]
    assert [DEFAULT_SYSTEM in p for p in turns] == [False, False, False, True]
    assert show(cli_run, "p")["system"] == [{"from_turn": 1, "text": "You are a pirate named Quill."},
                                            {"from_turn": 3, "text": "You are a poet."},
                                            {"from_turn": 4, "text": ""}]
    code, out, _ = cli_run("show", "p")
    assert "system from turn 3: You are a poet." in out.splitlines()[2]


def test_a_session_without_system_keeps_the_templates_default_and_the_header_announces_a_change(cli_run, prompts):
    say(cli_run, "-s", "plain", "hello there")
    assert DEFAULT_SYSTEM in next(p for p in prompts if "hello there" in p)
    store = open_store(cli_run.url)
    try:
        assert "system" not in resume_header(store, "plain")
        assert "system from turn 2: Be kind." in resume_header(store, "plain", system="Be kind.")
        assert "recall" not in resume_header(store, "plain", recall=0)
        assert "recall from turn 2: 3 stored turns" in resume_header(store, "plain", recall=3)
        with store.session() as db:
            assert show(cli_run, "plain")["system"] == [] and crud.get_session(db, name="plain").cycle == 1
    finally:
        store.close()


def test_seeded_sampling_reproduces_and_differs_from_greedy(cli_run):
    greedy = say(cli_run, "-s", "g", "Tell me about Kyoto.")["reply"]
    hot = ["--temperature", "1.0", "--seed", "3"]
    first = say(cli_run, "-s", "s1", *hot, "Tell me about Kyoto.")["reply"]
    again = say(cli_run, "-s", "s2", *hot, "Tell me about Kyoto.")["reply"]
    other = say(cli_run, "-s", "s3", "--temperature", "1.0", "--seed", "4", "Tell me about Kyoto.")["reply"]
    assert first == again
    assert first != greedy and other != first
    # A nucleus so small only the best token survives is greedy again, whatever the seed.
    narrow = say(cli_run, "-s", "s4", *hot, "--top-p", "0.000001", "Tell me about Kyoto.")["reply"]
    assert narrow == greedy


def test_top_p_never_draws_outside_the_nucleus():
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0])  # probabilities 0.64, 0.24, 0.09, 0.03
    gen = torch.Generator().manual_seed(0)
    draws = {pick(logits, Sampling(temperature=1.0, top_p=0.8), gen) for _ in range(300)}
    assert draws == {0, 1}
    assert {pick(logits, Sampling(temperature=1.0, top_p=0.5), gen) for _ in range(50)} == {0}
    assert {pick(logits, Sampling(temperature=5.0), gen) for _ in range(300)} == {0, 1, 2, 3}


@pytest.mark.parametrize(("argv", "status", "message"), [
    (("--temperature", "-1"), 2, "argument --temperature: -1 is below 0"),
    (("--temperature", "nan"), 2, "argument --temperature: 'nan' is not a finite number"),
    (("--top-p", "0", "--temperature", "1"), 2, "argument --top-p: 0 is out of range (above 0, at most 1)"),
    (("--top-p", "1.5", "--temperature", "1"), 2, "argument --top-p: 1.5 is out of range"),
    (("--seed", "3"), 1, "--top-p and --seed only apply to sampling; give --temperature above 0 as well"),
    (("--recall", "10000"), 2, "argument --recall: 10000 is out of range (0..20 stored turns)"),
    (("--recall", "-1"), 2, "argument --recall: -1 is out of range"),
    (("--recall", "x"), 2, "argument --recall: 'x' is not a whole number"),
    (("--system", "a\x07b"), 1, "the system prompt contains control characters (U+0007)"),
])
def test_bad_shaping_values_are_one_line_and_store_nothing(cli_run, argv, status, message):
    code, _, err = cli_run("say", "-s", "bad", *SMALL, *argv, "hello")
    errors = [ln for ln in err.splitlines() if ": error: " in ln]
    assert code == status and len(errors) == 1 and message in errors[0], err
    assert cli_run("sessions", "--json")[1].strip() == "[]"


def test_recall_puts_the_matching_stored_turn_in_front_the_same_way_as_the_harness(cli_run, monkeypatch):
    facts = ["My cat is called Zorblat.", "We fly to Kyoto in April.", "The hotel is near Gion."]
    for i, fact in enumerate(facts):
        assert say(cli_run, "-s", "r", *(["--recall", "2"] if i == 0 else []), fact)["recalled"] == []
    assert show(cli_run, "r")["recall"] == 2  # stored with the session at creation

    fed = []
    real = Engine.run_turn

    def spy(self, engram, user_text, **kw):
        fed.append(user_text)
        return real(self, engram, user_text, **kw)

    monkeypatch.setattr(Engine, "run_turn", spy)
    question = "What is my cat called?"
    report = say(cli_run, "-s", "r", question)  # the session's own --recall 2 applies
    assert report["recalled"] == [1]
    stored = [(t["user"], t["reply"]) for t in show(cli_run, "r")["turns"]][:3]
    harness = make_modes(top_k=2)["engram+retrieval"].prompt(Memory(turns=stored), question)
    assert fed[-1] == with_context(harness.context, question)  # the harness row's prompt, character for character
    assert fed[-1].startswith("Earlier in our conversation:\nUser: My cat is called Zorblat.")

    say(cli_run, "-s", "r", "--recall", "0", "What is my cat called?")
    assert fed[-1] == question and show(cli_run, "r")["recall"] == 0  # changed explicitly, and stored


def test_one_recall_implementation():
    assert harness_modes.recall is product_recall.recall is retrieval.recall
    assert harness_modes.with_context is product_recall.with_context is retrieval.with_context


def test_recall_text_stays_inside_its_budget_however_long_the_turns():
    turns = [(f"zorblat fact number {i} " + "lorem ipsum " * 200, "noted " * 100) for i in range(30)]
    found = retrieval.recall(turns, "what about zorblat", 20, budget_chars=RECALL_CHARS)
    assert found.turns and len(found.text) <= RECALL_CHARS
    unbounded = retrieval.recall(turns, "what about zorblat", 20)
    assert len(unbounded.turns) == 20 and len(unbounded.text) > 10 * RECALL_CHARS
    short = [("my cat is Zorblat", "nice"), ("it rained", "sorry"), ("Zorblat likes fish", "ok")]
    assert retrieval.recall(short, "zorblat?", 3, budget_chars=RECALL_CHARS) == retrieval.recall(short, "zorblat?", 3)


def test_stats_names_the_recalled_turns(tiny_lm, tmp_path):
    comp = Companion(db_url=f"sqlite:///{tmp_path / 'c.db'}", lm=tiny_lm, quiet=True, recall=3, max_new_tokens=4,
                     config=EngramConfig(layer=2, slots=4, recipe="select-sticky"))
    try:
        for text in ("My cat is called Zorblat.", "It rained all day.", "Zorblat eats fish."):
            comp.say("s", text)
        assert comp.stats("s")["recalled"] == "#1"  # the third turn matched the first
        comp.say("s", "Tell me about Zorblat.")
        assert comp.stats("s")["recalled"] == "#1, #3"
        with pytest.raises(Exception, match="recall must be a whole number from 0 to 20"):
            Companion(db_url=f"sqlite:///{tmp_path / 'c.db'}", lm=tiny_lm, recall=21)
    finally:
        comp.close()


def test_export_import_keeps_system_prompts_and_recall(cli_run, tmp_path):
    say(cli_run, "-s", "x", "--system", "You are a pirate.", "--recall", "3", "hello")
    say(cli_run, "-s", "x", "--system", "You are a poet.", "again")
    file = str(tmp_path / "x.engram")
    assert cli_run("export", "x", file)[0] == 0
    code, _, err = cli_run("import", file, "--as", "y")
    assert code == 0, err
    y = show(cli_run, "y")
    assert y["recall"] == 3
    assert y["system"] == [{"from_turn": 1, "text": "You are a pirate."}, {"from_turn": 2, "text": "You are a poet."}]
