"""The turn cycle on a tiny random model (fast) with the embedded model's tokenizer."""

import torch

from companion.engine import engram as E
from companion.engine.config import EngramConfig
from companion.engine.cycle import Engine, chat_ids


def test_reused_states_equal_plain_forward(tiny_lm):
    eng = Engine(tiny_lm, EngramConfig(layer=2, slots=4))
    first = eng.run_turn(None, "hello there", max_new_tokens=6, reuse_states=True)
    plain = eng.run_turn(None, "hello there", max_new_tokens=6, reuse_states=False)
    assert first.reply == plain.reply
    assert torch.allclose(first.engram, plain.engram, atol=1e-4)
    second = eng.run_turn(first.engram, "and again", max_new_tokens=6, reuse_states=True)
    second_plain = eng.run_turn(first.engram, "and again", max_new_tokens=6, reuse_states=False)
    assert torch.allclose(second.engram, second_plain.engram, atol=1e-4)


def test_engram_is_pooled_layer_states_of_whole_turn(tiny_lm):
    eng = Engine(tiny_lm, EngramConfig(layer=3, slots=4))
    prev = torch.randn(4, tiny_lm.hidden_size)
    res = eng.run_turn(prev, "what now", max_new_tokens=5, reuse_states=False)
    full = res.turn_ids
    assert full[: len(chat_ids(tiny_lm.tokenizer, "what now"))] == chat_ids(tiny_lm.tokenizer, "what now")
    assert full[-1] == tiny_lm.tokenizer.eos_token_id and len(full) == res.input_tokens + res.reply_tokens + 1
    # by hand: scale, prepend, forward, take hidden_states[3], pool to 4
    embeds = tiny_lm.model.get_input_embeddings()(torch.tensor([full]))
    scaled = E.scale(prev, E.mean_row_norm(tiny_lm.model.get_input_embeddings().weight))
    x, mask = E.inject(scaled, embeds)
    with torch.no_grad():
        hs = tiny_lm.model(inputs_embeds=x, attention_mask=mask, output_hidden_states=True).hidden_states
    assert torch.allclose(res.engram, E.pool(hs[3][0], 4), atol=1e-5)


def test_prompt_is_slots_plus_input_however_long_the_session(tiny_lm):
    eng = Engine(tiny_lm, EngramConfig(layer=2, slots=8))
    engram, sizes = None, []
    for i in range(6):
        text = "tell me more"
        res = eng.run_turn(engram, text, max_new_tokens=4)
        n_input = len(chat_ids(tiny_lm.tokenizer, text))
        assert res.prompt_tokens == (0 if engram is None else engram.shape[0]) + n_input
        sizes.append(res.prompt_tokens)
        engram = res.engram
    assert len(set(sizes[1:])) == 1  # constant from turn 2 on: no transcript growth


def test_empty_engram_gives_same_reply_as_none(tiny_lm):
    eng = Engine(tiny_lm, EngramConfig(layer=2, slots=4))
    a = eng.run_turn(None, "hi", max_new_tokens=5)
    b = eng.run_turn(torch.zeros(0, tiny_lm.hidden_size), "hi", max_new_tokens=5)
    assert a.reply == b.reply and torch.equal(a.engram, b.engram)


def test_absorb_is_one_forward_over_the_known_turn(tiny_lm):
    eng = Engine(tiny_lm, EngramConfig(layer=2, slots=4))
    prev = torch.randn(4, tiny_lm.hidden_size)
    replay = eng.absorb(prev, "how are you?", "Fine, thanks.")
    assert replay.turn_ids[-1] == tiny_lm.tokenizer.eos_token_id
    assert replay.prompt_tokens == 4 + len(chat_ids(tiny_lm.tokenizer, "how are you?"))
    assert torch.allclose(replay.engram, E.pool(eng.states_of(prev, replay.turn_ids), 4), atol=1e-6)


def test_stopping_after_block_L_gives_the_full_pass_states(tiny_lm):
    for layer in (0, 1, 3, 4):  # 4 == depth: falls back to the full pass (final norm applied)
        eng = Engine(tiny_lm, EngramConfig(layer=layer, slots=4))
        prev = torch.randn(4, tiny_lm.hidden_size)
        ids = chat_ids(tiny_lm.tokenizer, "a question", "an answer")
        fast = eng.states_of(prev, ids, stop_early=True)
        full = eng.states_of(prev, ids, stop_early=False)
        assert fast.shape == full.shape == (4 + len(ids), tiny_lm.hidden_size)
        assert torch.allclose(fast, full, atol=1e-5), layer


def test_min_new_tokens_fixes_reply_length(tiny_lm):
    eng = Engine(tiny_lm, EngramConfig(layer=2, slots=4))
    res = eng.run_turn(None, "hi", max_new_tokens=7, min_new_tokens=7)
    assert res.reply_tokens == 7
