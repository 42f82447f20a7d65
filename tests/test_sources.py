"""Where each slot came from (companion.engine.sources): known answers, and traced through real turns on the tiny model."""

from __future__ import annotations

import doctest

import pytest

from companion.engine import sources as S
from companion.engine.config import EngramConfig
from companion.engine.cycle import Engine
from companion.engine.recipes import retention as R
from companion.engine.recipes.writers import state_part


def test_known_answers():
    assert doctest.testmod(S).failed == 0


def _live(engine, texts):
    engram, sources, out = None, None, []
    for turn, text in enumerate(texts, start=1):
        res = engine.run_turn(engram, text, max_new_tokens=3, turn=turn, sources=sources)
        engram, sources = res.engram, res.sources
        out.append((res, engram, sources))
    return out


@pytest.mark.parametrize("recipe", ["select-words", "select-sticky", "select-keep"])
def test_every_slot_of_a_token_keeping_recipe_is_traced_to_its_turn_and_token(tiny_lm, recipe):
    fixed = {**R.init_map(64, seed=1), **R.init_value(64, seed=1)} if recipe == "select-keep" else None
    engine = Engine(tiny_lm, EngramConfig(layer=2, slots=6, recipe=recipe), fixed=fixed)
    texts = ["My cactus is called Vornelk.", "I went swimming today.", "The code is 5821, remember it."]
    lived = _live(engine, texts)
    for turn, (res, engram, sources) in enumerate(lived, start=1):
        assert sources is not None and len(sources) == engram.shape[0]
        assert all(s is not None for s in sources)
        assert all(1 <= s.turn <= turn for s in sources)
        p = engine.place(lived[turn - 2][1] if turn > 1 else None, texts[turn - 1])
        full = p.ids + res.turn_ids[res.input_tokens:]  # the prompt as laid out, then reply + end
        for s in sources:
            if s.turn == turn:  # entered now: that position of this turn is that token, and not a slot
                assert full[s.position] == s.token and s.position >= p.content and s.position not in p.slots
                assert s.text == engine.tokenizer.decode([s.token])
    # a slot that stayed keeps the source it entered with
    (_, e2, s2), (_, e3, s3) = lived[1], lived[2]
    cols = engine.writer.extra_columns
    for j, row in enumerate(state_part(e3, cols)):
        same = (state_part(e2, cols) == row).all(dim=1).nonzero().flatten()
        if same.numel():
            assert s3[j] == s2[int(same[0])]


def test_an_averaging_recipe_has_no_slot_sources(tiny_lm):
    engine = Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe="seed"))
    res = engine.run_turn(None, "My cactus is called Vornelk.", max_new_tokens=2, turn=1)
    assert res.sources is None


def test_unknown_old_sources_stay_unknown_and_new_ones_are_known(tiny_lm):
    engine = Engine(tiny_lm, EngramConfig(layer=2, slots=6, recipe="select-words"))
    first = engine.run_turn(None, "My cactus is called Vornelk.", max_new_tokens=2, turn=1)
    second = engine.run_turn(first.engram, "Zebras dance quietly on Tuesdays.", max_new_tokens=2, turn=2,
                             sources=None)  # an engram stored before sources existed
    assert second.sources is not None
    kept_old = [s for s in second.sources if s is None]
    new = [s for s in second.sources if s is not None]
    assert all(s.turn == 2 for s in new)
    assert len(kept_old) + len(new) == second.engram.shape[0]


def test_sources_round_trip_and_bad_values_read_as_unknown():
    src = [S.SlotSource(2, 5, 77, " Vorn"), None, S.SlotSource(2, 6, 78, "elk")]
    assert S.parse_sources(S.sources_json(src), 3) == src
    for bad in ("not json", "{}", "[[1, 2, 3]]", '[["a", 1, 2, "x"]]', "[null, null]"):
        assert S.parse_sources(bad, 1) is None
    assert S.parse_sources(None, 3) is None and S.sources_json(None) is None
