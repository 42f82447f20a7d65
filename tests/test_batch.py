"""Batched sessions give what one-at-a-time turns give."""

import pytest
import torch

from companion.batch import absorb_many, answer_many
from companion.config import EngramConfig
from companion.cycle import Engine


RECIPES = ["seed", "centred", "deep-framed", "select-deep"]


@pytest.mark.parametrize("recipe", RECIPES)
def test_absorb_many_equals_absorb_per_row(tiny_lm, recipe):
    eng = Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe=recipe))
    torch.manual_seed(1)
    engrams = [None, torch.randn(4, eng.width).abs(), torch.randn(2, eng.width).abs()]
    turns = [("hi", "hello"), ("a much longer message about the garden and the bees", "ok"), ("x", "a reply here")]
    batched = absorb_many(eng, engrams, turns)
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
