"""LoCoMo evaluation: the loader on the real files, the scorer, sampling, and a tiny-model run end to end."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from companion.engine.config import EngramConfig
from companion.engine.cycle import Engine
from companion.eval.locomo import asking as AS
from companion.eval.locomo import data as D
from companion.eval.locomo import evaluate as EV
from companion.eval.locomo.f1 import declines, locomo_f1, normalize, token_f1
from companion.eval.locomo.replay import replay
from companion.eval.locomo.report import write
from memory_store import crud, open_store

DATA = D.default_data_dir()
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"LoCoMo dev folder not found at {DATA} "
                                "(set COMPANION_LOCOMO to a folder of conv-*.json)")


# -- loader on the real files ---------------------------------------------------
@needs_data
def test_loader_reads_every_dev_conversation():
    convs = D.load(DATA)
    assert len(convs) == len(list(DATA.glob("*.json"))) >= 1
    for c in convs:
        assert c.speaker_a != c.speaker_b
        assert [s.index for s in c.sessions] == sorted(s.index for s in c.sessions)
        assert all(s.date and s.lines for s in c.sessions)
        raw = json.loads((DATA / f"{c.conv_id}.json").read_text())
        n_lines = sum(len(v) for k, v in raw.items() if D._SESSION.fullmatch(k))
        assert len(c.lines) == n_lines
        assert len(c.qa) == len(raw["qa"]) and {q.category for q in c.qa} <= set(D.CATEGORIES)
        assert all(q.answer for q in c.qa if q.category != 5)
        turns = c.turns()
        text = "\n".join(u + "\n" + r for u, r in turns)
        # every line lands in exactly one turn, in order, and each session's date opens a user text
        assert sum(bool(u.strip()) and not u.startswith("[") or u.count("] ") for u, _ in turns) >= len(c.sessions)
        assert all(f"[{s.date}]" in text for s in c.sessions)
        rendered = [line.render() for line in c.lines]
        pos = 0
        for r in rendered:
            pos = text.index(r, pos)
        assert turns[0][0].startswith(f"[{c.sessions[0].date}]")


@needs_data
def test_loader_accepts_a_single_file_and_the_locomo10_list_layout(tmp_path):
    one = sorted(DATA.glob("*.json"))[0]
    assert [c.conv_id for c in D.load(one)] == [one.stem]
    raw = json.loads(one.read_text())
    speakers = {k: raw.pop(k) for k in [k for k in raw if k != "qa"]}
    (tmp_path / "locomo10.json").write_text(json.dumps([{"sample_id": "x-1", "conversation": speakers, "qa": raw["qa"]}]))
    (c,) = D.load(tmp_path)
    assert c.conv_id == "x-1" and c.turns() == D.load(one)[0].turns()


def test_turn_pairing_rules():
    conv = D.parse(_conversation("t", 2, lines=5, opener="B"), "t")
    turns = conv.turns()
    # session 1 opens with B: a date-only user text; 5 lines B,A,B,A,B -> 3 turns
    assert turns[0][0] == "[1 May, 2023]" and turns[0][1].startswith("Bea: ")
    assert turns[1][0].startswith("Ann: ") and turns[1][1].startswith("Bea: ")
    # session 2 opens with A: the date is prepended to A's line; the trailing A line has an empty reply
    s2 = turns[3:]
    assert s2[0][0].startswith("[2 May, 2023] Ann: ") and s2[-1][1] == ""
    assert sum(bool(u) and u != "[1 May, 2023]" for u, _ in turns) + sum(bool(r) for _, r in turns) == 10


# -- scoring -----------------------------------------------------------------------
def test_token_f1_known_cases():
    assert token_f1("7 May 2023", "7 May 2023") == 1.0
    assert token_f1("The Eiffel Tower!", "eiffel tower") == 1.0  # article and punctuation ignored
    assert token_f1("pottery class", "camping trip") == 0.0
    assert token_f1("the red car", "a red bicycle") == pytest.approx(0.5)
    assert token_f1("Caroline went to Paris in May", "Paris") == pytest.approx(2 / 7)
    assert token_f1("", "Paris") == 0.0
    assert normalize("An Apple, the PEAR.") == "apple pear"


def test_locomo_f1_category_rules():
    assert locomo_f1("pottery, camping", "camping, pottery, painting", 1) == pytest.approx(2 / 3)
    assert locomo_f1("she likes hiking", "hiking; she said so in May", 3) == pytest.approx(0.5)
    assert locomo_f1("hiking", "hiking", 4) == 1.0


def test_declines_detector():
    for reply in ("That was not mentioned in our conversation.", "I don't know.", "I cannot say.",
                  "There is no information about that.", "I'm not sure what she did."):
        assert declines(reply), reply
    for reply in ("She went to Paris.", "In May 2023", "Knowing her, pottery"):
        assert not declines(reply), reply


def test_stratified_sampling_is_deterministic_and_balanced():
    qa = tuple(D.QA(i, f"q{i}", "a", cat) for i, cat in enumerate([1] * 30 + [2] * 20 + [3] * 3 + [4] * 40 + [5] * 25))
    a, b = D.stratified(qa, 15, 7, "c"), D.stratified(qa, 15, 7, "c")
    assert a == b and len(a) == 15 and len({q.index for q in a}) == 15
    assert D.stratified(qa, 15, 8, "c") != a
    counts = Counter(q.category for q in a)
    assert set(counts) == {1, 2, 3, 4, 5} and max(counts.values()) - min(counts.values()) <= 1
    big = Counter(q.category for q in D.stratified(qa, 50, 0, "c"))
    assert big[3] == 3 and sum(big.values()) == 50  # the short category's share passes on
    assert D.stratified(qa, 10, 7, "c") == a[:10]  # every prefix is itself balanced
    assert len(D.stratified(qa, None, 0)) == len(qa)


# -- a tiny-model run end to end ---------------------------------------------------
def _conversation(tag, sessions, lines, opener="A"):
    raw = {"speaker_a": "Ann", "speaker_b": "Bea", "qa": []}
    for s in range(1, sessions + 1):
        raw[f"session_{s}_date_time"] = f"{s} May, 2023"
        first = opener if s == 1 else "A"
        raw[f"session_{s}"] = [
            {"speaker": ("Ann" if (i % 2 == 0) == (first == "A") else "Bea"), "dia_id": f"D{s}:{i + 1}",
             "text": f"{tag} line {s}.{i} about the blue kayak"} for i in range(lines)]
    raw["qa"] = [{"question": f"What colour is {tag}'s kayak?", "answer": "blue", "category": c, "evidence": []}
                 for c in (1, 2, 3, 4)] + [{"question": "What is Ann's dog called?", "category": 5,
                                            "adversarial_answer": "Rex", "evidence": []}]
    return raw


@pytest.fixture()
def tiny_engine(tiny_lm):
    return Engine(tiny_lm, EngramConfig(layer=2, slots=4))


def test_tiny_run_writes_everything_then_reuses_replay_and_answers(tiny_engine, tmp_path, monkeypatch):
    convs = [D.parse(_conversation(t, 2, 5, opener=o), f"conv-{t}") for t, o in (("x", "B"), ("y", "A"))]
    out = tmp_path / "out"
    settings = EV.RunSettings(limit=3, max_new_tokens=3, context_chars=1200, batch=4)
    state = EV.run(tiny_engine, convs, out, settings, progress=False)
    # the faithful path (replay with Engine.absorb, questions through modes.ask) gives the same answers
    single = EV.run(tiny_engine, convs, tmp_path / "single", EV.RunSettings(limit=3, max_new_tokens=3,
                    context_chars=1200, batch=1), progress=False)
    key = lambda a: (a["conv"], a["qa_index"], a["mode"])  # noqa: E731
    assert sorted((key(a), a["reply"], a["prompt_tokens"]) for a in single.answers) == \
        sorted((key(a), a["reply"], a["prompt_tokens"]) for a in state.answers)
    nll_single = {key(a): a["nll"] for a in single.answers}
    for a in state.answers:  # the gold answer's NLL: the shared-prefix and batched paths equal nll_one
        assert (a["nll"] is None) == (a["category"] == 5) == (nll_single[key(a)] is None)
        if a["nll"] is not None:
            assert a["nll"] == pytest.approx(nll_single[key(a)], abs=2e-3) and a["nll_tokens"] > 0
    modes = state.rows
    assert modes == ["engram:seed", "none", "foreign:seed", "transcript", "recent", "retrieval",
                     "engram+retrieval:seed"]
    results = write(out, state, settings, tiny_engine, command="test")
    lines = (out / "answers.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 3 * len(modes)
    assert {r["conv"] for r in state.answers} == {"conv-x", "conv-y"}
    assert set(results["f1"]) == set(modes) and set(results["prompt_tokens"]) == set(modes)
    assert all(0.0 <= v <= 1.0 for m in modes for v in results["f1"][m].values() if v is not None)
    assert results["prompt_tokens"]["none"] < results["prompt_tokens"]["transcript"]
    assert results["prompt_tokens"]["engram:seed"] == results["prompt_tokens"]["none"] + 4
    assert results["recipes"] == ["seed"] and results["recipe_configs"]["seed"]["slots"] == 4
    for m in modes:  # categories 1-4 are measured, 5 has no gold answer
        measured = [a for a in state.answers if a["mode"] == m and a["category"] != 5]
        assert results["nll"][m]["overall"] > 0 and results["nll"][m]["n"] == len(measured) > 0
    assert "Gold-answer NLL" in (out / "locomo.md").read_text()
    assert all(0 < a["token_ratio"] <= 1.05 for a in state.answers)
    assert (out / "locomo.png").stat().st_size > 1000 and "| transcript |" in (out / "locomo.md").read_text()
    assert {a["split"] for a in state.answers} == {"report"}

    # the store holds each conversation as a real session: every turn, and its final engram
    with open_store(f"sqlite:///{out / 'replays.db'}") as store, store.session() as db:
        for c in convs:
            chat = crud.get_session(db, name=state.replays["seed"][c.conv_id]["session"])
            assert [(t.user_text, t.reply_text) for t in crud.turns(db, chat=chat)] == c.turns()
            engram = None
            for u, r in c.turns():
                engram = tiny_engine.absorb(engram, u, r).engram
            assert torch.allclose(crud.latest_engram(db, chat=chat)[0], engram, atol=1e-4)

    # second run: no replay, no question asked again
    def boom(*a, **k):
        raise AssertionError("should have been cached")

    import companion.batched.absorb
    import companion.batched.batch

    for target, name in ((Engine, "absorb"), (AS, "ask"), (companion.batched.absorb, "absorb_rows"),
                         (companion.batched.batch, "answer_many"), (Engine, "answer_nll")):
        monkeypatch.setattr(target, name, boom)
    again = EV.run(tiny_engine, convs, out, settings, progress=False)
    assert all(r["new_turns"] == 0 for r in again.replays["seed"].values())
    assert len(again.answers) == len(state.answers)
    assert (out / "answers.jsonl").read_text().splitlines() == lines

    # report-only over a run cut short: a question some mode never answered is left out for every mode
    cut = lines[:-1]
    (out / "answers.jsonl").write_text("\n".join(cut) + "\n")
    lost = json.loads(lines[-1])
    partial = EV.run(tiny_engine, convs, out, settings, progress=False, ask_missing=False)
    assert len(partial.answers) == len(lines) - len(modes)
    assert (lost["conv"], lost["qa_index"]) not in {(a["conv"], a["qa_index"]) for a in partial.answers}


def test_two_recipes_get_their_own_replays_and_rows_and_batch_equals_one_at_a_time(tiny_lm, tmp_path):
    engines = [Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe=r)) for r in ("seed", "select-deep")]
    convs = [D.parse(_conversation(t, 1, 4), f"conv-{t}") for t in ("x", "y")]
    modes = ("engram", "foreign", "none")
    settings = EV.RunSettings(limit=5, max_new_tokens=3, context_chars=1200, batch=4, modes=modes)
    many = EV.run(engines, convs, tmp_path / "many", settings, progress=False)
    one = EV.run(engines, convs, tmp_path / "one", EV.RunSettings(limit=5, max_new_tokens=3, context_chars=1200,
                 batch=1, modes=modes), progress=False)
    assert many.rows == ["engram:seed", "engram:select-deep", "none", "foreign:seed", "foreign:select-deep"]
    assert set(many.replays) == {"seed", "select-deep"}
    assert many.replays["seed"]["conv-x"]["session"] != many.replays["select-deep"]["conv-x"]["session"]
    key = lambda a: (a["conv"], a["qa_index"], a["mode"])  # noqa: E731
    by_key = {key(a): a for a in one.answers}
    assert len(many.answers) == len(one.answers) == 2 * 5 * len(many.rows)
    assert {a["category"] for a in many.answers if a["nll"] is None} == {5}  # no gold answer: no NLL
    for a in many.answers:
        b = by_key[key(a)]
        assert (a["reply"], a["prompt_tokens"], a["recipe"]) == (b["reply"], b["prompt_tokens"], b["recipe"])
        assert (a["nll"] is None and b["nll"] is None) or a["nll"] == pytest.approx(b["nll"], abs=2e-3)
    results = write(tmp_path / "many", many, settings, engines, command="test")
    assert set(results["nll"]) == set(many.rows) and results["recipes"] == ["seed", "select-deep"]
    assert "| foreign:select-deep |" in (tmp_path / "many" / "locomo.md").read_text()
    with pytest.raises(SystemExit, match="recipes"):  # another recipe list is another run
        EV.run(engines[:1], convs, tmp_path / "many", settings, progress=False)


def test_interrupted_replay_resumes_from_last_committed_turn(tiny_engine, tmp_path):
    conv = D.parse(_conversation("z", 2, 6), "conv-z")
    total = len(conv.turns())

    def stop_after_two(i, n):
        if i == 2:
            raise KeyboardInterrupt

    with open_store(f"sqlite:///{tmp_path / 'a.db'}") as store:
        with pytest.raises(KeyboardInterrupt):
            replay(tiny_engine, store, conv, on_turn=stop_after_two)
        resumed = replay(tiny_engine, store, conv)
    with open_store(f"sqlite:///{tmp_path / 'b.db'}") as store:
        whole = replay(tiny_engine, store, conv)
    assert resumed.new_turns == total - 2 and whole.new_turns == total
    assert torch.allclose(resumed.memory.engram, whole.memory.engram, atol=1e-5)


def test_shared_prefix_answers_equal_run_turn(tiny_engine):
    from companion.eval.locomo.prefix import answer_shared
    from companion.eval.modes import with_context

    context = "User: Ann: the blue kayak is in the shed\nAssistant: Bea: noted, the shed " * 6
    texts = [with_context(context, q) for q in ("Where is the kayak?", "What colour is it?", "Who owns it?")]
    got = answer_shared(tiny_engine, None, texts, max_new_tokens=5)
    want = [tiny_engine.run_turn(None, t, max_new_tokens=5, repetition_penalty=1.0).reply for t in texts]
    assert got == want
    engram = torch.randn(4, tiny_engine.lm.hidden_size)
    got = answer_shared(tiny_engine, engram, texts, max_new_tokens=5)
    assert got == [tiny_engine.run_turn(engram, t, max_new_tokens=5, repetition_penalty=1.0).reply for t in texts]


def test_shared_prefix_and_batched_nll_equal_answer_nll(tiny_engine):
    from companion.eval.harness.nll import nll_many, nll_one, nll_shared
    from companion.eval.modes import with_context

    context = "User: Ann: the blue kayak is in the shed\nAssistant: Bea: noted, the shed " * 6
    texts = [with_context(context, q) for q in ("Where is the kayak?", "What colour is it?", "Who owns it?")]
    golds = ["in the shed", "blue", "Ann, who bought it in May 2023"]
    want = []
    for t, a in zip(texts, golds):
        total, n = tiny_engine.answer_nll(None, t, a)
        want.append(total / n)
    for got in (nll_shared(tiny_engine, texts, golds), nll_many(tiny_engine, [None] * 3, texts, golds),
                [nll_one(tiny_engine, None, t, a) for t, a in zip(texts, golds)]):
        assert [g["nll"] for g in got] == pytest.approx(want, abs=1e-3)


def test_results_name_the_code_a_run_started_on(tiny_engine, tmp_path, monkeypatch):
    import companion.eval.locomo.report as R

    convs = [D.parse(_conversation(t, 2, 3, opener=o), f"conv-{t}") for t, o in (("x", "B"), ("y", "A"))]
    settings = EV.RunSettings(limit=2, max_new_tokens=2, context_chars=600, batch=4)
    monkeypatch.setattr(EV, "code_version", lambda repo: "at-start")
    state = EV.run(tiny_engine, convs, tmp_path / "out", settings, progress=False)
    monkeypatch.setattr(R, "code_version", lambda repo: "at-end")  # a commit made while it ran
    assert write(tmp_path / "out", state, settings, tiny_engine)["code_version"] == "at-start"


def test_next_turn_nll_scores_from_start_with_the_engram_of_everything_before(tiny_lm):
    from companion.eval.locomo.nextturn import next_turn_nll, summarise

    eng = Engine(tiny_lm, EngramConfig(layer=2, slots=8, recipe="select-sticky"))
    turns = [("My van is called Zorbo.", "Nice name."), ("It is blue.", "Lovely."), ("Where is it?", "Parked."),
             ("", "skipped"), ("What colour?", "Blue.")]
    rows = next_turn_nll({"select-sticky": eng}, turns, conv_id="c", start=2)
    assert [r["turn"] for r in rows] == [2, 4]  # earlier turns only build the engram; an empty line is not scored
    total, n = eng.answer_nll(None, "Where is it?", "Parked.")
    assert rows[0]["none"] == total / n and rows[0]["tokens"] == n
    engram = eng.absorb(eng.absorb(None, *turns[0]).engram, *turns[1]).engram
    total, n = eng.answer_nll(engram, "Where is it?", "Parked.")
    assert rows[0]["select-sticky"] == pytest.approx(total / n) and rows[0]["select-sticky"] != rows[0]["none"]
    diff = summarise(rows, ["select-sticky"])["diff:select-sticky"]
    assert diff["n"] == 2 and diff["mean"] == pytest.approx(sum(r["select-sticky"] - r["none"] for r in rows) / 2)
