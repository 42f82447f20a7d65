"""A head every row shares runs once, and the rows come out as if it had run in each."""

import doctest
from types import SimpleNamespace

import pytest
import torch

import companion.batched.absorb as A
import companion.batched.batch as B
import companion.batched.prefix as prefix
import companion.batched.rows as R
from companion.engine.config import EngramConfig
from companion.engine.cycle import Engine


def _row(ids, slots=()):
    return SimpleNamespace(ids=list(ids), slots=list(slots))


def test_examples_in_the_docstrings():
    for module in (prefix, A, B, R):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_common_head_stops_at_the_first_difference_the_first_slot_and_the_limit():
    a = _row(range(30), slots=[20, 21])
    b = _row(list(range(25)) + [99] * 5)
    assert prefix.common_head([a, b]) == 20  # a's slots begin at 20
    assert prefix.common_head([b, _row(list(range(12)) + [7] * 10)]) == 12  # ids differ from 12 on
    assert prefix.common_head([a, b], limit=15) == 15
    assert prefix.common_head([_row(range(10))]) == 9  # a row keeps one id of its own to run
    assert prefix.common_head([a, _row(range(30), slots=[1])]) == 0  # an engram in front: nothing shared
    assert prefix.common_head([a, b], limit=prefix.MIN_HEAD - 1) == 0  # too short to pay for its pass


def test_head_class_puts_rows_opening_alike_together():
    a, b = _row(range(30), slots=[20]), _row(list(range(12)) + [5] * 9)
    assert prefix.head_class(a) == prefix.head_class(b)
    assert prefix.head_class(_row(range(30), slots=[0])) is None
    assert prefix.head_class(_row(range(40, 70))) != prefix.head_class(a)


RECIPES = ["seed", "framed", "deep-framed", "select-framed", "select-deep", "select-statements"]


@pytest.fixture()
def engines(tiny_lm):
    return [Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe=r)) for r in RECIPES]


def _heads(monkeypatch):
    """Record the length of every head run."""
    seen, real = [], prefix.run_head

    def spy(model, embeds, layer=None):
        seen.append(embeds.shape[1])
        return real(model, embeds, layer)

    for module in (A, B):
        monkeypatch.setattr(module, "run_head", spy)
    return seen


def test_absorb_rows_with_a_shared_head_equal_rows_without(engines, monkeypatch):
    torch.manual_seed(7)
    turns = [("I'm going to Kyoto in April with my sister Nadia.", "Got it."), ("hi", "hello there")]
    rows = [(e, torch.randn(4, e.width).abs() if j else None, t) for e in engines for j, t in enumerate(turns)]
    heads = _heads(monkeypatch)
    got = A.absorb_rows([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    assert heads and min(heads) >= prefix.MIN_HEAD
    n_heads = len(heads)
    with prefix.without_heads():  # every row runs its head itself
        alone = A.absorb_rows([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    assert len(heads) == n_heads
    for (e, _, _), (new, states), (new0, states0) in zip(rows, got, alone):
        assert torch.allclose(states, states0, atol=1e-5, rtol=1e-4), e.config.recipe
        assert torch.allclose(new, new0, atol=1e-5, rtol=1e-4), e.config.recipe


def test_answer_rows_with_a_shared_head_equal_rows_without(engines, monkeypatch):
    torch.manual_seed(8)
    texts = ["Who am I travelling with?", "Earlier I told you: I live in Berlin.\nNow answer briefly: where?"]
    rows = [(e, torch.randn(4, e.width) if j % 2 else None, t) for e in engines for j, t in enumerate(texts * 2)]
    target = engines[0].tokenizer("my sister Nadia", add_special_tokens=False)["input_ids"]
    heads = _heads(monkeypatch)
    got = B.answer_rows([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], max_new_tokens=5,
                        targets=[target] * len(rows))
    assert heads and min(heads) >= prefix.MIN_HEAD
    n_heads = len(heads)
    with prefix.without_heads():
        alone = B.answer_rows([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], max_new_tokens=5,
                              targets=[target] * len(rows))
    assert len(heads) == n_heads
    for (e, _, _), a, b in zip(rows, got, alone):
        assert a.reply == b.reply, e.config.recipe
        assert a.target_nll[0] == pytest.approx(b.target_nll[0], abs=1e-3)


def test_a_first_turn_is_one_row_under_every_recipe(engines, monkeypatch):
    sizes, real = [], A._absorb_forward

    def spy(engines_, placements, start, surprise):
        sizes.append(len(placements))
        return real(engines_, placements, start, surprise)

    monkeypatch.setattr(A, "_absorb_forward", spy)
    turn = ("I'm going to Kyoto in April with my sister Nadia.", "Got it.")
    got = A.absorb_rows(engines, [None] * len(engines), [turn] * len(engines))
    assert sizes == [1]  # before any engram, every reader lays the turn out as the plain chat
    for e, (new, _states) in zip(engines, got):
        assert torch.allclose(new, e.absorb(None, *turn).engram, atol=1e-5, rtol=1e-4), e.config.recipe
