"""A tiny-model smoke run of the whole degradation harness, its outputs and its resume."""

from __future__ import annotations

import json

import pytest
import torch

import companion.eval.harness.trial as D  # where Trial looks up `ask`
from companion import Engine, EngramConfig
from companion.eval.harness import DistractorPool, HarnessError, RunSettings, run
from companion.eval.modes import MODE_NAMES, mode_rows

SEED_ROWS = [r.name for r in mode_rows(MODE_NAMES, ["seed"])]


@pytest.fixture()
def engine(tiny_lm):
    return Engine(tiny_lm, EngramConfig(layer=2, slots=4))


@pytest.fixture()
def pool():
    return DistractorPool.load("generated")


@pytest.fixture()
def counted_ask(monkeypatch):
    calls = []
    real = D.ask

    def ask(*args, **kwargs):
        calls.append(args[1].name)
        return real(*args, **kwargs)

    monkeypatch.setattr(D, "ask", ask)
    return calls


def test_smoke_run_writes_everything_and_resumes(engine, pool, tmp_path, counted_ask):
    settings = RunSettings(seed=3, cycles=[0, 1, 3], max_new_tokens=4)
    res = run(engine, settings, 2, tmp_path, pool=pool, progress=False, command="test")
    for name in ("results.json", "recall.md", "recall.png", "nll.png", "diagnostics.png", "trials.jsonl", "run.json"):
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "results.json").read_text())
    assert list(saved["recall"]) == SEED_ROWS == list(saved["answer_nll"])
    assert SEED_ROWS[0] == "engram:seed" and "foreign:seed" in SEED_ROWS and "transcript" in SEED_ROWS
    for mode in SEED_ROWS:
        assert set(saved["recall"][mode]) == {"0", "1", "3"}
        for cell in saved["recall"][mode].values():
            assert cell["trials"] == 2 and 0 <= cell["correct"] <= 2
        for cell in saved["answer_nll"][mode].values():
            assert cell["n"] == 2 and cell["low"] <= cell["mean"] <= cell["high"]
    for key in ("model", "fingerprint", "recipes", "recipe_configs", "seed", "code_version", "command", "profile"):
        assert key in saved
    assert saved["recipes"] == ["seed"] and saved["recipe_configs"]["seed"]["layer"] == 2 and saved["seed"] == 3
    trial = saved["per_trial"][0]
    assert [p["k"] for p in trial["probes"]] == [0, 1, 3]
    assert all("reply" in a and "correct" in a for p in trial["probes"] for a in p["answers"].values())
    assert all(a["nll"] > 0 and a["nll_tokens"] > 0 for p in trial["probes"] for a in p["answers"].values())
    diag = trial["probes"][0]["diagnostics"]["seed"]
    assert diag["cos_first"] == pytest.approx(1.0, abs=1e-5)  # k=0: the turn-1 engram itself
    assert 0 < diag["pos0_share_turn"] <= diag["pos0_share_slot0"] <= 1
    assert 1 <= diag["effective_rank"] <= 4
    table = (tmp_path / "recall.md").read_text()
    assert "| engram:seed |" in table and "k=3" in table and "NLL of the correct answer" in table
    assert counted_ask, "the modes were asked through companion.eval.modes.ask"
    # 'none' has the same prompt at every k, so it is asked once per trial and reused.
    assert counted_ask.count("none") == 2

    counted_ask.clear()
    again = run(engine, settings, 2, tmp_path, pool=pool, progress=False)
    assert counted_ask == []  # nothing recomputed
    assert again["recall"] == res["recall"]
    assert len((tmp_path / "trials.jsonl").read_text().splitlines()) == 2

    run(engine, settings, 3, tmp_path, pool=pool, progress=False)  # one more trial, only it runs
    assert counted_ask and len((tmp_path / "trials.jsonl").read_text().splitlines()) == 3


def test_refuses_an_out_dir_with_other_settings(engine, pool, tmp_path):
    run(engine, RunSettings(seed=1, cycles=[0], modes=["none"], max_new_tokens=2), 1, tmp_path, pool=pool,
        progress=False)
    with pytest.raises(HarnessError, match="different settings"):
        run(engine, RunSettings(seed=2, cycles=[0], modes=["none"], max_new_tokens=2), 1, tmp_path, pool=pool,
            progress=False)


def test_a_torn_last_line_is_run_again(engine, pool, tmp_path):
    settings = RunSettings(seed=1, cycles=[0, 2], modes=["none", "transcript"], max_new_tokens=2)
    run(engine, settings, 1, tmp_path, pool=pool, progress=False)
    log = tmp_path / "trials.jsonl"
    log.write_text(log.read_text() + '{"trial": 1, "probes": [')
    res = run(engine, settings, 2, tmp_path, pool=pool, progress=False)
    assert res["trials"] == 2 and res["recall"]["none"]["0"]["trials"] == 2


def test_same_seed_same_answers(engine, pool, tmp_path):
    settings = RunSettings(seed=5, cycles=[0, 1], modes=["seed-engram", "recent"], max_new_tokens=3)
    a = run(engine, settings, 1, tmp_path / "a", pool=pool, progress=False)
    b = run(engine, settings, 1, tmp_path / "b", pool=pool, progress=False)
    def strip(trials):  # wall-clock seconds differ between runs, nothing else may
        return json.loads(json.dumps(trials).replace('"seconds"', '"_s"'), object_hook=lambda d: {
            k: v for k, v in d.items() if k != "_s"})
    assert strip(a["per_trial"]) == strip(b["per_trial"])


def test_unknown_mode_is_refused():
    with pytest.raises(HarnessError, match="unknown mode"):
        RunSettings(modes=["telepathy"])


def test_locomo_distractors_are_speaker_pairs(tmp_path):
    conv = {"speaker_a": "A", "speaker_b": "B",
            "session_1": [{"speaker": "A", "text": "hi"}, {"speaker": "B", "text": "hello"},
                          {"speaker": "A", "text": "x"}, {"speaker": "A", "text": "how are you"},
                          {"speaker": "B", "text": "fine"}],
            "session_1_date_time": "1 May"}
    (tmp_path / "c.json").write_text(json.dumps(conv))
    p = DistractorPool.load(tmp_path)
    assert p.conversations == [[("hi", "hello"), ("how are you", "fine")]]
    with pytest.raises(FileNotFoundError):
        DistractorPool.load(tmp_path / "missing")


def _same_records(one, many):
    for a, b in zip(one["per_trial"], many["per_trial"]):
        assert a["trial"] == b["trial"] and a["fact"] == b["fact"]
        for pa, pb in zip(a["probes"], b["probes"]):
            assert pa["k"] == pb["k"]
            assert {m: x["reply"] for m, x in pa["answers"].items()} == {m: x["reply"] for m, x in pb["answers"].items()}
            assert {m: x["prompt_tokens"] for m, x in pa["answers"].items()} == \
                   {m: x["prompt_tokens"] for m, x in pb["answers"].items()}
            for key in ("same_prompt_as", "error"):  # the same rows reused, the same rows refused
                assert {m: x.get(key) for m, x in pa["answers"].items()} == \
                       {m: x.get(key) for m, x in pb["answers"].items()}
            for m, x in pa["answers"].items():
                assert pb["answers"][m]["nll"] == pytest.approx(x["nll"], abs=2e-3), m
            assert set(pa["diagnostics"]) == set(pb["diagnostics"])
            for recipe, diag in pa["diagnostics"].items():
                for name, v in diag.items():
                    w = pb["diagnostics"][recipe][name]
                    assert (v is None and w is None) or w == pytest.approx(v, rel=1e-3, abs=1e-4), (recipe, name)


def test_lockstep_batch_gives_the_one_at_a_time_records(engine, pool, tmp_path):
    settings = RunSettings(seed=7, cycles=[0, 2], max_new_tokens=4)
    one = run(engine, settings, 3, tmp_path / "one", pool=pool, progress=False)
    many = run(engine, settings, 3, tmp_path / "many", pool=pool, progress=False, batch=3)
    _same_records(one, many)


def test_a_foreign_session_is_the_next_trials_own_and_lockstep_lives_it_once(engine, pool, tmp_path,
                                                                             monkeypatch):
    import companion.eval.harness.lockstep as L

    settings = RunSettings(seed=7, cycles=[0, 2], max_new_tokens=4)
    rows, real = [], L.absorb_rows

    def spy(engines, engrams, turns):
        rows.append(len(turns))
        return real(engines, engrams, turns)

    monkeypatch.setattr(L, "absorb_rows", spy)
    trials = run(engine, settings, 3, tmp_path / "many", pool=pool, progress=False, batch=3)["per_trial"]
    for t in trials:
        j = t["foreign_trial"]
        assert j > t["trial"] and t["foreign_fact"]["template"] != t["fact"]["template"]
        if j < len(trials):
            assert t["foreign_fact"] == trials[j]["fact"]
    outside = sum(t["foreign_trial"] >= len(trials) for t in trials)
    assert outside >= 1  # the last trial's twin is never in the group
    # every step lives the three own sessions plus only the twins outside the group
    assert rows == [len(trials) + outside] * (1 + max(settings.cycles))


def test_two_recipes_in_one_run_have_their_own_rows_and_batch_equals_one_at_a_time(tiny_lm, pool, tmp_path):
    engines = [Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe=r)) for r in ("seed", "select-deep")]
    settings = RunSettings(seed=2, cycles=[0, 2], max_new_tokens=3)
    one = run(engines, settings, 2, tmp_path / "one", pool=pool, progress=False)
    rows = list(one["recall"])
    assert rows == ["engram:seed", "engram:select-deep", "none", "foreign:seed", "foreign:select-deep",
                    "transcript", "recent", "retrieval", "engram+retrieval:seed", "engram+retrieval:select-deep"]
    assert one["recipes"] == ["seed", "select-deep"]
    assert one["recipe_configs"]["select-deep"]["recipe"] == "select-deep"
    assert set(one["diagnostics"]) == {"seed", "select-deep"}
    probe = one["per_trial"][0]["probes"][1]
    # each recipe's engram row reads its own engram: a select-deep prompt holds its own slot count
    # (seed: 4 slots in front; select-deep: 4 slots plus the frame's words inside the message)
    assert probe["answers"]["engram:seed"]["prompt_tokens"] == probe["answers"]["none"]["prompt_tokens"] + 4
    assert probe["answers"]["engram:select-deep"]["prompt_tokens"] > probe["answers"]["none"]["prompt_tokens"] + 4
    assert probe["diagnostics"]["select-deep"]["effective_rank"] > 0
    table = (tmp_path / "one" / "recall.md").read_text()
    for row in ("engram:seed", "foreign:select-deep", "engram+retrieval:select-deep"):
        assert f"| {row} |" in table
    assert "recipe select-deep" in table
    # the lockstep path (batch.absorb_rows / answer_rows over all recipes) gives the same records
    many = run(engines, settings, 2, tmp_path / "many", pool=pool, progress=False, batch=2)
    _same_records(one, many)


def test_engram_plus_retrieval_rows_only_for_the_chosen_recipes(tiny_lm, pool, tmp_path):
    engines = [Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe=r)) for r in ("seed", "select-deep")]
    kw = dict(seed=2, cycles=[0, 1], modes=["engram", "retrieval", "engram+retrieval"], max_new_tokens=3)
    every = run(engines, RunSettings(**kw), 2, tmp_path / "every", pool=pool, progress=False, batch=2)
    some = run(engines, RunSettings(**kw, retrieval_recipes=["select-deep"]), 2, tmp_path / "some", pool=pool,
               progress=False, batch=2)
    assert list(every["recall"]) == ["engram:seed", "engram:select-deep", "retrieval",
                                     "engram+retrieval:seed", "engram+retrieval:select-deep"]
    assert list(some["recall"]) == ["engram:seed", "engram:select-deep", "retrieval", "engram+retrieval:select-deep"]
    assert some["settings"]["retrieval_recipes"] == ["select-deep"] and "retrieval_recipes" not in every["settings"]
    for a, b in zip(every["per_trial"], some["per_trial"]):  # leaving rows out changes none of the others
        for pa, pb in zip(a["probes"], b["probes"]):
            for row, ans in pb["answers"].items():
                assert ans["reply"] == pa["answers"][row]["reply"]
                assert ans["nll"] == pytest.approx(pa["answers"][row]["nll"], abs=1e-4)
    # without the mode there is nothing to choose: the settings stay those of a run before the option
    assert RunSettings(modes=["engram"], retrieval_recipes=["seed"]).retrieval_recipes is None


def test_lockstep_shares_passes_across_recipes_and_gives_the_one_at_a_time_records(tiny_lm, pool, tmp_path,
                                                                                    monkeypatch):
    """Rows of recipes at both depths, with and without surprise, answered and lived in shared passes."""
    import companion.batched.batch as B

    recipes = ("seed", "deep-framed", "select-framed", "select-deep")
    engines = [Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe=r)) for r in recipes]
    settings = RunSettings(seed=6, cycles=[0, 2], max_new_tokens=3)
    one = run(engines, settings, 2, tmp_path / "one", pool=pool, progress=False)
    passes, real = [], B._answer_pass

    def spy(engs, *args, **kwargs):
        passes.append({e.config.recipe for e in engs})
        return real(engs, *args, **kwargs)

    import companion.eval.harness.lockstep as L

    calls, real_rows = [], L.answer_rows

    def count(*args, **kwargs):
        calls.append(len(args[2]))
        return real_rows(*args, **kwargs)

    monkeypatch.setattr(B, "_answer_pass", spy)
    monkeypatch.setattr(L, "answer_rows", count)
    many = run(engines, settings, 2, tmp_path / "many", pool=pool, progress=False, batch=2)
    _same_records(one, many)
    assert len(calls) == 1  # every checkpoint's rows asked together, once the last turn is lived
    assert any(len(p) > 2 for p in passes)  # one pass answered rows of several recipes
    assert len(passes) < len(mode_rows(MODE_NAMES, recipes)) * len(settings.cycles)


def test_reuse_runs_only_the_changed_recipes_and_equals_a_full_run(tiny_lm, pool, tmp_path, monkeypatch):
    import companion.batched.absorb as A
    import companion.batched.batch as B

    seed, select, framed = (Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe=r))
                            for r in ("seed", "select-deep", "deep-framed"))
    settings = RunSettings(seed=8, cycles=[0, 2], max_new_tokens=3)
    run([seed, select], settings, 2, tmp_path / "a", pool=pool, progress=False, batch=2)
    full = run([seed, framed], settings, 3, tmp_path / "full", pool=pool, progress=False, batch=2)
    ran = []
    for module, name in ((A, "_absorb_pass"), (B, "_answer_pass")):
        def spy(engines, *args, _real=getattr(module, name), **kwargs):
            ran.extend(e.config.recipe for e in engines)
            return _real(engines, *args, **kwargs)
        monkeypatch.setattr(module, name, spy)
    # trials 0 and 1 (in a) live and ask deep-framed only, side by side; trial 2 (not in a) runs in full, alone
    got = run([seed, framed], settings, 3, tmp_path / "b", pool=pool, progress=False, batch=2, reuse=tmp_path / "a")
    assert set(ran) == {"deep-framed"}  # seed's rows and the text rows were not asked again, nor seed lived
    assert got["reused"]["recipes"] == ["seed"] and list(got["recall"]) == list(full["recall"])
    _same_records(full, got)
    with pytest.raises(HarnessError, match="settings"):
        run([seed, framed], RunSettings(seed=9, cycles=[0, 2], max_new_tokens=3), 1, tmp_path / "d", pool=pool,
            progress=False, reuse=tmp_path / "a")
    with pytest.raises(HarnessError, match="first"):
        run([framed, seed], settings, 1, tmp_path / "e", pool=pool, progress=False, reuse=tmp_path / "a")


def test_resume_with_another_recipe_list_is_refused(tiny_lm, pool, tmp_path):
    seed, sink = (Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe=r)) for r in ("seed", "sink"))
    settings = RunSettings(seed=1, cycles=[0], modes=["engram"], max_new_tokens=2, nll=False)
    run([seed], settings, 1, tmp_path, pool=pool, progress=False)
    for engines in ([seed, sink], [sink]):
        with pytest.raises(HarnessError, match="recipes"):
            run(engines, settings, 1, tmp_path, pool=pool, progress=False)
    assert run(seed, settings, 1, tmp_path, pool=pool, progress=False)["recipes"] == ["seed"]  # same list resumes


def test_answer_nll_is_the_mean_token_nll_of_the_answer_after_the_asked_prompt(engine, pool, tmp_path):
    """The recorded NLL equals a by-hand forward over exactly the prompt the mode's question is asked with."""
    from companion.engine import engram as E
    from companion.engine.cycle import chat_ids
    from companion.eval.harness.degradation import ACK
    from companion.eval.harness.facts import facts_for
    from companion.eval.modes import format_turns, with_context

    settings = RunSettings(seed=4, cycles=[0], modes=["engram", "none", "transcript"], max_new_tokens=2)
    res = run(engine, settings, 1, tmp_path, pool=pool, progress=False)
    answers = res["per_trial"][0]["probes"][0]["answers"]
    fact, _ = facts_for(4, 0)
    tok, model = engine.tokenizer, engine.model
    target = tok(fact.answer, add_special_tokens=False)["input_ids"]

    def by_hand(engram, text):
        ids = chat_ids(tok, text) + target
        embeds, mask = E.inject(None if engram is None else engine.prepare(engram), engine.embed(ids))
        with torch.no_grad():
            logits = model(inputs_embeds=embeds, attention_mask=mask).logits[0].float()
        lp = torch.log_softmax(logits[-len(target) - 1:-1], dim=-1)
        return float(-lp[torch.arange(len(target)), torch.tensor(target)].mean())

    transcript = with_context(format_turns([(fact.statement, ACK)]), fact.question)
    engram = engine.absorb(None, fact.statement, ACK).engram
    assert answers["transcript"]["nll"] == pytest.approx(by_hand(None, transcript), abs=1e-4)
    assert answers["none"]["nll"] == pytest.approx(by_hand(None, fact.question), abs=1e-4)
    assert answers["engram:seed"]["nll"] == pytest.approx(by_hand(engram, fact.question), abs=1e-4)
    assert all(a["nll_tokens"] == len(target) for a in answers.values())
    cell = res["answer_nll"]["transcript"]["0"]
    assert cell["n"] == 1 and cell["mean"] == pytest.approx(answers["transcript"]["nll"])


@pytest.mark.slow
def test_answer_in_the_transcript_lowers_its_nll_on_the_real_model(embedded_lm, pool, tmp_path):
    engine = Engine(embedded_lm, EngramConfig())
    settings = RunSettings(seed=0, cycles=[0], modes=["none", "transcript"], max_new_tokens=4)
    res = run(engine, settings, 3, tmp_path, pool=pool, progress=False)
    nll = res["answer_nll"]
    assert nll["transcript"]["0"]["mean"] < nll["none"]["0"]["mean"]
    for trial in res["per_trial"]:
        a = trial["probes"][0]["answers"]
        assert a["transcript"]["nll"] < a["none"]["nll"], trial["fact"]


def test_warmup_turns_come_before_the_fact_and_lockstep_equals_one_at_a_time(tiny_lm, pool, tmp_path):
    from companion.eval.harness import Trial

    engines = [Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe=r)) for r in ("seed", "select-words")]
    settings = RunSettings(seed=3, cycles=[0, 1], max_new_tokens=3, warmup=2)
    t = Trial(engines, settings, pool, 0)
    plain = Trial(engines, RunSettings(seed=3, cycles=[0, 1], max_new_tokens=3), pool, 0)
    assert len(t.warmup) == 2 and t.warmup != t.distractors[:2]
    assert t.distractors == plain.distractors  # the warm-up is drawn after, so old runs keep theirs
    one = run(engines, settings, 2, tmp_path / "one", pool=pool, progress=False)
    many = run(engines, settings, 2, tmp_path / "many", pool=pool, progress=False, batch=2)
    _same_records(one, many)
    assert one["settings"]["warmup"] == 2
    # the transcript row at k=0 read the two warm-up turns and then the fact
    prompt_k0 = one["per_trial"][0]["probes"][0]["answers"]["transcript"]["prompt_tokens"]
    base = run(engines, RunSettings(seed=3, cycles=[0], max_new_tokens=3), 1, tmp_path / "plain", pool=pool,
               progress=False)
    assert "warmup" not in base["settings"]
    assert prompt_k0 > base["per_trial"][0]["probes"][0]["answers"]["transcript"]["prompt_tokens"]


def test_a_negative_warmup_is_refused():
    with pytest.raises(HarnessError, match="warmup"):
        RunSettings(warmup=-1)


def test_results_name_the_code_a_run_started_on(engine, pool, tmp_path, monkeypatch):
    import companion.eval.harness.degradation as DG

    out = tmp_path / "run"
    # before any trial is written the run is starting; after, a commit could have landed meanwhile
    monkeypatch.setattr(DG, "code_version", lambda: "at-end" if (out / "trials.jsonl").exists() else "at-start")
    res = run(engine, RunSettings(seed=1, cycles=[0], max_new_tokens=2), 1, out, pool=pool, progress=False)
    assert res["code_version"] == "at-start"


def test_recipe_table_known_answer():
    from companion.eval.harness.report import recipe_table

    def cell(correct, low, high):
        return {"correct": correct, "trials": 4, "low": low, "high": high}

    ks = ["0", "1", "5", "20"]
    results = {"recipes": ["a"],
               "recall": {"engram:a": {k: cell(i, 0.1 * i, 0.5) for i, k in enumerate(ks)},
                          "foreign:a": {k: cell(1 if k == "5" else 0, 0.0, 0.4) for k in ks},
                          "none": {k: cell(0, 0.0, 0.4) for k in ks}},
               "answer_nll": {"engram:a": {k: {"mean": 2.0, "low": 1.5, "high": 2.5, "n": 4} for k in ks},
                              "foreign:a": {"0": {"mean": 6.0, "n": 4}, "1": {"mean": 6.5, "n": 4}},
                              "none": {}}}
    lines = recipe_table(results).splitlines()
    assert lines[2] == ("| a | 0/4 [0–50] | 1/4 [10–50] | 2/4 [20–50] | 3/4 [30–50] | 2.00 [1.50–2.50] | "
                        "2.00 [1.50–2.50] | 2.00 [1.50–2.50] | 2.00 [1.50–2.50] | 1/16; 6.00 / 6.50 |")
    assert lines[3] == "| *none* | 0/4 [0–40] | 0/4 [0–40] | 0/4 [0–40] | 0/4 [0–40] | – | – | – | – | – |"


def test_retrieval_choice_defaults_to_the_product_recipe_and_refuses_one_not_compared():
    from companion.engine.recipes import DEFAULT, recipe_names
    from companion.eval.modes import retrieval_choice

    every = recipe_names()
    assert retrieval_choice(None, every) == [DEFAULT]
    assert retrieval_choice(None, ["seed", "deep"]) == ["seed"]
    assert retrieval_choice(None, ["seed"]) is None  # a one-recipe run: every recipe, as before
    assert retrieval_choice(["all"], every) is None
    assert retrieval_choice(["deep", "seed"], ["seed", "deep"]) is None
    assert retrieval_choice(["deep"], ["seed", "deep", "sink"]) == ["deep"]
    with pytest.raises(ValueError, match="not among the compared"):
        retrieval_choice(["sink"], ["seed", "deep"])


def test_dev_facts_come_from_the_training_templates_and_never_the_harness_ones(engine, pool, tmp_path):
    from companion.eval.harness.facts import TEMPLATES, facts_for
    from companion.training.facts import TRAIN_TEMPLATES

    harness, dev = {t[0] for t in TEMPLATES}, {t[0] for t in TRAIN_TEMPLATES}
    got = [facts_for(0, i, "dev") for i in range(40)]
    assert all(f.template in dev and g.template in dev and f.template != g.template for f, g in got)
    assert len({f.template for f, _ in got}) > 12  # every part of the training set, held-out templates too
    assert not harness & dev
    assert facts_for(0, 3) == facts_for(0, 3, "harness")  # the reported facts did not move
    settings = RunSettings(seed=1, cycles=[0], modes=["none", "transcript"], max_new_tokens=3, facts="dev")
    res = run(engine, settings, 2, tmp_path, pool=pool, progress=False)
    assert [t["fact"]["template"] in dev for t in res["per_trial"]] == [True, True]
    assert res["settings"]["facts"] == "dev" and "dev facts" in (tmp_path / "recall.md").read_text()
    with pytest.raises(HarnessError, match="fact set"):
        RunSettings(facts="test")
