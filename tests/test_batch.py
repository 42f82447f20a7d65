"""Batched sessions give what one-at-a-time turns give."""

import pytest
import torch

from companion.batched.absorb import absorb_rows
from companion.batched.batch import answer_many
from companion.engine.config import EngramConfig
from companion.engine.cycle import Engine

RECIPES = ["seed", "centred", "deep-framed", "select-deep"]


@pytest.mark.parametrize("recipe", RECIPES)
def test_absorb_rows_equals_absorb_per_row(tiny_lm, recipe):
    eng = Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe=recipe))
    torch.manual_seed(1)
    engrams = [None, torch.randn(4, eng.width).abs(), torch.randn(2, eng.width).abs()]
    turns = [("hi", "hello"), ("a much longer message about the garden and the bees", "ok"), ("x", "a reply here")]
    batched = [engram for engram, _states in absorb_rows(eng, engrams, turns)]
    for e, (u, r), got in zip(engrams, turns, batched):
        assert torch.allclose(got, eng.absorb(e, u, r).engram, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("recipe", RECIPES)
def test_answer_many_equals_run_turn_per_row(tiny_lm, recipe):
    eng = Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe=recipe))
    torch.manual_seed(2)
    engrams = [None, torch.randn(4, eng.width), torch.randn(4, eng.width)]
    texts = ["what is my name?", "where do I live, and with whom do I live there?", "pet?"]
    batched = answer_many(eng, engrams, texts, max_new_tokens=6)
    single = [eng.run_turn(e, t, max_new_tokens=6, repetition_penalty=1.0, update=False).reply
              for e, t in zip(engrams, texts)]
    assert batched == single


MIXED = ["seed", "centred", "deep", "deep-framed", "select-framed", "select-deep"]  # both depths, both writers


@pytest.fixture()
def mixed_engines(tiny_lm):
    return [Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe=r)) for r in MIXED]


def _spy(monkeypatch, name):
    """Record the recipes of every pass the batch module runs through `name`."""
    import companion.batched.batch as B

    passes, real = [], getattr(B, name)

    def spy(engines, *args, **kwargs):
        passes.append([e.config.recipe for e in engines])
        return real(engines, *args, **kwargs)

    monkeypatch.setattr(B, name, spy)
    return passes


def test_absorb_rows_of_several_recipes_equal_absorb_and_turn_states(mixed_engines, monkeypatch):
    import companion.batched.absorb as B
    from companion.batched.absorb import absorb_rows

    passes, engram_passes, real = [], [], B._absorb_pass

    def spy(engines, placements, engrams):
        passes.append([e.config.recipe for e in engines])
        engram_passes.append(engrams)
        return real(engines, placements, engrams)

    monkeypatch.setattr(B, "_absorb_pass", spy)
    torch.manual_seed(3)
    rows = []  # (engine, engram, turn)
    turns = [("hi", "hello"), ("a much longer message about the garden and the bees", "ok"), ("x", "a reply here")]
    for e in mixed_engines:
        for j, turn in enumerate(turns):
            rows.append((e, None if j == 0 else torch.randn(4 - j + 1, e.width).abs(), turn))
    got = absorb_rows([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    for (e, engram, (u, r)), (new, states) in zip(rows, got):
        assert torch.allclose(new, e.absorb(engram, u, r).engram, atol=1e-5, rtol=1e-4), e.config.recipe
        assert torch.allclose(states, e.turn_states(engram, u, r), atol=1e-5, rtol=1e-4), e.config.recipe
    # the rows really shared passes: recipes of both depths together; surprise writers with the others only
    # where their lower halves can be shared (an engram written at the layer) or there is no engram yet
    assert len(passes) < len(MIXED) and any({"seed", "deep"} <= set(p) for p in passes)
    firsts = [[e is None for e in engrams] for engrams in engram_passes]
    for p, first in zip(passes, firsts):
        if len({r.startswith("select") for r in p}) > 1:
            assert all(first) or set(p) <= {"deep", "deep-framed", "select-deep"}, p
    assert any({"deep-framed", "select-deep"} <= set(p) and not any(f) for p, f in zip(passes, firsts))


def test_rows_with_the_same_engram_and_reader_run_once_and_each_writer_writes_its_own(tiny_lm, monkeypatch):
    import companion.batched.absorb as B
    from companion.batched.absorb import absorb_rows
    from companion.batched.batch import answer_rows

    recipes = ["select-deep", "select-sticky", "select-words", "deep-framed"]  # one reader, four writers
    engines = [Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe=r)) for r in recipes]
    torch.manual_seed(5)
    same, other = torch.randn(4, engines[0].width), torch.randn(4, engines[3].width)
    engrams = [same, same, same, other]
    widths, real = [], B._absorb_forward

    def spy(engs, placements, *args):
        widths.append(len(placements))
        return real(engs, placements, *args)

    monkeypatch.setattr(B, "_absorb_forward", spy)
    turn = ("my cat is called Ferdinand", "a fine name")
    got = absorb_rows(engines, engrams, [turn] * 4)
    assert sum(widths) == 2  # the three rows holding `same` are one row of the forward
    for e, engram, (new, states) in zip(engines, engrams, got):
        assert torch.allclose(new, e.absorb(engram, *turn).engram, atol=1e-5, rtol=1e-4), e.config.recipe
        assert torch.allclose(states, e.turn_states(engram, *turn), atol=1e-5, rtol=1e-4), e.config.recipe
    assert not torch.equal(got[0][0], got[1][0]) or not torch.equal(got[0][0], got[2][0])  # writers differ
    passes = _spy(monkeypatch, "_answer_pass")
    answers = answer_rows(engines, engrams, ["what is my cat called?"] * 4, max_new_tokens=3)
    assert sum(map(len, passes)) == 2 and answers[1].reply == answers[0].reply == answers[2].reply
    assert answers[3].reply == engines[3].run_turn(other, "what is my cat called?", max_new_tokens=3,
                                                   repetition_penalty=1.0, update=False).reply


def test_answer_rows_of_several_recipes_equal_run_turn_and_answer_nll(mixed_engines, monkeypatch):
    from companion.batched.batch import answer_rows
    from companion.eval.harness.nll import nll_one

    passes = _spy(monkeypatch, "_answer_pass")
    torch.manual_seed(4)
    texts = ["what is my name?", "where do I live, and with whom do I live there?", "pet?"]
    rows = [(e, None if j == 0 else torch.randn(4, e.width), t) for e in mixed_engines for j, t in enumerate(texts)]
    answer = "Berlin, with my sister"
    targets = [e.tokenizer(answer, add_special_tokens=False)["input_ids"] if i % 2 else None
               for i, (e, _, _) in enumerate(rows)]
    got = answer_rows([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], max_new_tokens=5,
                      targets=targets)
    for (e, engram, text), target, a in zip(rows, targets, got):
        assert a.reply == e.run_turn(engram, text, max_new_tokens=5, repetition_penalty=1.0, update=False).reply
        assert a.prompt_tokens == len(e.place(engram, text).ids)
        if target is None:
            assert a.target_nll is None
        else:
            total, n = a.target_nll
            assert n == len(target)
            assert total / n == pytest.approx(nll_one(e, engram, text, answer)["nll"], abs=1e-4)
    # short prompts: one pass for the rows that open with the chat template (they share its head,
    # companion.batched.prefix), one for those whose engram comes first; a row without an engram is the same
    # prompt under every recipe, asked once per target (by seed without one, by centred with one)
    assert sorted(map(set, passes), key=len) == [{"seed", "centred", "deep"}, set(MIXED) - {"deep"}]
    assert sum(map(len, passes)) == len(rows) - 4


def test_rows_by_length_keeps_short_rows_apart_from_long_ones_and_within_budget():
    from companion.batched.rows import rows_by_length

    lengths = [80, 1500, 85, 140, 1450, 90, 145, 30]
    passes = rows_by_length(lengths, per_pass=200)
    assert sorted(i for p in passes for i in p) == list(range(len(lengths)))
    assert {1, 4} in [set(p) for p in passes] and not any({0, 1} <= set(p) for p in passes)
    assert rows_by_length(lengths, per_pass=10 ** 6) == [sorted(range(8), key=lambda i: lengths[i])]  # one pass
    for p in rows_by_length(lengths, per_pass=10 ** 6, budget=3000):
        assert len(p) == 1 or len(p) * max(lengths[i] for i in p) <= 3000


def test_rows_by_length_keeps_rows_of_one_key_together_at_equal_lengths():
    from companion.batched.rows import rows_by_length

    lengths = [50, 50, 50, 50, 50, 50]
    keys = ["a", "b", "a", "b", "a", "b"]
    plain = rows_by_length(lengths, per_pass=10, budget=150)  # three rows a pass
    keyed = rows_by_length(lengths, per_pass=10, budget=150, keys=keys)
    assert [len(p) for p in keyed] == [len(p) for p in plain] == [3, 3]  # the same passes' sizes and costs
    assert {frozenset(keys[i] for i in p) for p in keyed} == {frozenset("a"), frozenset("b")}
    assert any(len({keys[i] for i in p}) == 2 for p in plain)  # without keys they mix
