"""How long a fact's slots stay (companion.eval.harness.held): known answers, and the harness's record of it."""

from __future__ import annotations

import doctest
from types import SimpleNamespace

import torch

from companion import Engine, EngramConfig
from companion.eval.harness import DistractorPool, RunSettings, run
from companion.eval.harness import held as Hd


def test_known_answers():
    assert doctest.testmod(Hd).failed == 0


def _writer(cols: int, keeps: bool = True):
    return SimpleNamespace(writer=SimpleNamespace(extra_columns=cols, fills_gradually=keeps) if keeps
                           else SimpleNamespace(extra_columns=cols))


def test_the_last_of_the_facts_slots_leaving_is_the_turn_recorded():
    # rows: 2 state dims + 1 salience column that changes every turn (a decayed score), which must not count
    a, b, f1, f2, x, y = ([float(i), float(i) + 0.5] for i in range(6))
    row = lambda s, sal: s + [sal]  # noqa: E731
    before = torch.tensor([row(a, 1.0), row(b, 1.0)])
    after = torch.tensor([row(a, 0.9), row(f1, 5.0), row(f2, 4.0)])  # the fact wrote f1 and f2
    slots = Hd.FactSlots({"keep": _writer(1), "avg": _writer(0, keeps=False)},
                         {"keep": before, "avg": None}, {"keep": after, "avg": torch.zeros(3, 3)})
    assert slots.record() == {"keep": {"entered": 2, "left_at": None}, "avg": None}
    slots.step(1, {"keep": torch.tensor([row(x, 3.0), row(f1, 4.5), row(f2, 3.9)]), "avg": None})
    assert slots.now["keep"] == 2
    slots.step(2, {"keep": torch.tensor([row(x, 2.0), row(f1, 4.0), row(y, 6.0)]), "avg": None})
    assert slots.now["keep"] == 1 and slots.record()["keep"]["left_at"] is None
    slots.step(3, {"keep": torch.tensor([row(x, 2.0), row(y, 6.0), row(a, 1.0)]), "avg": None})
    assert slots.now["keep"] == 0 and slots.record()["keep"] == {"entered": 2, "left_at": 3}
    # a state equal to the fact's coming back later does not undo the leaving
    slots.step(4, {"keep": torch.tensor([row(f1, 9.0)]), "avg": None})
    assert slots.record()["keep"]["left_at"] == 3


def test_a_fact_that_never_got_in_left_at_zero():
    same = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    slots = Hd.FactSlots({"r": _writer(0)}, {"r": same}, {"r": same.clone()})
    assert slots.record() == {"r": {"entered": 0, "left_at": 0}}


def test_the_harness_records_it_the_same_one_at_a_time_and_in_lockstep(tiny_lm, tmp_path):
    pool = DistractorPool.load("generated")
    engines = [Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe=r)) for r in ("seed", "select-words")]
    settings = RunSettings(seed=3, cycles=[0, 1, 4], max_new_tokens=2, modes=["engram", "none"], warmup=1)
    one = run(engines, settings, 2, tmp_path / "one", pool=pool, progress=False)
    many = run(engines, settings, 2, tmp_path / "many", pool=pool, progress=False, batch=2)
    assert [t["fact_slots"] for t in one["per_trial"]] == [t["fact_slots"] for t in many["per_trial"]]
    assert one["fact_slots"]["seed"] is None  # an averaging writer has no slots of its own to follow
    words = one["fact_slots"]["select-words"]
    assert words["trials"] == 2 and words["entered_mean"] > 0
    for t in one["per_trial"]:
        rec = t["fact_slots"]["select-words"]
        for p in t["probes"]:  # the per-checkpoint count agrees with the recorded leaving turn
            now = p["diagnostics"]["select-words"]["fact_slots_held"]
            left = rec["left_at"] is not None and rec["left_at"] <= p["k"]
            assert (now == 0) == left and 0 <= now <= rec["entered"]
        assert "fact_slots_held" not in t["probes"][0]["diagnostics"]["seed"]
    assert "How long the fact stayed" in (tmp_path / "one" / "recall.md").read_text()


def test_only_the_statements_own_tokens_count_as_the_facts(tiny_lm):
    """select-sticky's first turn fills slots with template and reply tokens too; they are not the fact."""
    engine = Engine(tiny_lm, EngramConfig(layer=2, slots=16, recipe="select-sticky"))
    turn = ("My cactus is called Vornelk.", "Got it, I'll remember that.")
    after = engine.absorb(None, *turn).engram
    every = Hd.FactSlots({"s": engine}, {"s": None}, {"s": after})
    own = Hd.FactSlots({"s": engine}, {"s": None}, {"s": after}, turn)
    n_every, n_own = every.record()["s"]["entered"], own.record()["s"]["entered"]
    assert 0 < n_own < n_every
    # select-sticky keeps states unchanged: count the slots equal to a state of the user's words directly
    p, states = engine.place(None, *turn), engine.turn_states(None, *turn)
    user = states[p.content:p.user_end]
    assert sum(bool((user == row).all(dim=1).any()) for row in after[:, :-1]) == n_own
