"""A decoder in two halves equals one pass, and batches share the lower half without changing results."""

import pytest
import torch

from companion.engine import halves
from companion.engine.config import EngramConfig
from companion.engine.cycle import Engine


def test_distinct_known_answers():
    assert halves.distinct(["a", "b", "a", "c", "b"]) == ([0, 1, 3], [0, 1, 0, 2, 1])
    assert halves.distinct([(1, 2), 0, (1, 2)]) == ([0, 1], [0, 1, 0])
    assert halves.distinct([]) == ([], [])


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_lower_then_upper_equals_one_pass_with_padding_and_cache(tiny_lm, depth):
    model = tiny_lm.model
    torch.manual_seed(0)
    ids = torch.randint(10, 500, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding, as answer passes have
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        embeds = model.get_input_embeddings()(ids)
        whole = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True)
        below = halves.fresh_cache(model)
        hidden = halves.lower(model, embeds, mask, depth, positions=positions, cache=below)
        assert len(model.get_decoder().layers) == 4  # the block list is restored after each half
        split = halves.upper(model, hidden, mask, depth, positions=positions, use_cache=True)
        assert len(model.get_decoder().layers) == 4
        ok = mask.bool()
        assert torch.allclose(split.logits[ok], whole.logits[ok], atol=1e-5)
        cache = halves.with_lower(split.cache, below, [0, 1, 2], depth)
        step = dict(input_ids=torch.tensor([[7], [8], [9]]), attention_mask=torch.cat([mask, mask[:, :1] * 0 + 1], 1),
                    position_ids=positions[:, -1:] + 1, use_cache=True)
        a = model(**step, cache=cache).logits
        b = model(**step, cache=whole.cache).logits
    assert torch.allclose(a, b, atol=1e-5)  # the completed cache decodes like the ordinary one


def test_splits_refuses_a_decoder_that_acts_between_embeddings_and_blocks(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=2, num_key_value_heads=1)
    plain, scaled = LlamaForCausalLM(cfg).eval(), LlamaForCausalLM(cfg).eval()
    assert halves.splits(plain, 2)
    assert not halves.splits(plain, 0) and not halves.splits(plain, 3)  # no block on one side

    def double(_module, args, kwargs):  # a decoder that scales its input (as some models' do)
        return args, {**kwargs, "inputs_embeds": kwargs["inputs_embeds"] * 2}

    scaled.get_decoder().register_forward_pre_hook(double, with_kwargs=True)
    assert not halves.splits(scaled, 2)


LAYER_RECIPES = ["deep-framed", "select-deep", "select-sticky", "select-words"]


@pytest.fixture()
def lower_calls(monkeypatch):
    """The batch size of every lower half the batch module runs."""
    import companion.batched.absorb as A
    import companion.batched.batch as B

    calls, real = [], B.lower

    def spy(model, embeds, *args, **kwargs):
        calls.append(embeds.shape[0])
        return real(model, embeds, *args, **kwargs)

    for module in (A, B):
        monkeypatch.setattr(module, "lower", spy)
    return calls


@pytest.mark.parametrize("recipes", [LAYER_RECIPES, LAYER_RECIPES[1:]], ids=["with-deep-framed", "surprise-only"])
def test_absorb_rows_sharing_a_lower_half_equal_absorb(tiny_lm, lower_calls, recipes, monkeypatch):
    """deep-framed needs no output layer: it takes the shared lower half and skips the upper one."""
    import companion.batched.absorb as A
    from companion.batched.absorb import absorb_rows

    upper_rows, real_upper = [], A.upper
    monkeypatch.setattr(A, "upper", lambda model, hidden, *a, **k: upper_rows.append(hidden.shape[0])
                        or real_upper(model, hidden, *a, **k))

    engines = [Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe=r)) for r in recipes]
    torch.manual_seed(5)
    turns = [("my sister Nadia lives in Kyoto", "Got it."), ("and the bees?", "They are fine.")]
    rows = [(e, torch.randn(4, e.width).abs(), t) for t in turns for e in engines]  # one turn, four engrams
    got = absorb_rows([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    for (e, engram, (u, r)), (new, states) in zip(rows, got):
        assert torch.allclose(new, e.absorb(engram, u, r).engram, atol=1e-5, rtol=1e-4), e.config.recipe
        assert torch.allclose(states, e.turn_states(engram, u, r), atol=1e-5, rtol=1e-4), e.config.recipe
    assert lower_calls == [2]  # one pass; the two turns' lower halves ran once each
    assert upper_rows == [2 * sum(e.writer.needs_surprise for e in engines)]


def test_answer_rows_sharing_a_lower_half_equal_run_turn_and_answer_nll(tiny_lm, lower_calls):
    from companion.batched.batch import answer_rows
    from companion.eval.harness.nll import nll_one

    engines = [Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe=r)) for r in LAYER_RECIPES + ["seed"]]
    torch.manual_seed(6)
    texts = ["Who am I travelling with?", "where?"]
    rows = [(e, torch.randn(4, e.width), t) for t in texts for e in engines for _ in range(2)]  # engram, foreign
    answer = "my sister Nadia"
    targets = [e.tokenizer(answer, add_special_tokens=False)["input_ids"] for e, _, _ in rows]
    got = answer_rows([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], max_new_tokens=5,
                      targets=targets)
    for (e, engram, text), a in zip(rows, got):
        assert a.reply == e.run_turn(engram, text, max_new_tokens=5, repetition_penalty=1.0, update=False).reply
        total, n = a.target_nll
        assert total / n == pytest.approx(nll_one(e, engram, text, answer)["nll"], abs=1e-4)
    # two texts under the layer recipes; seed's rows (engram first, no shared head) run whole in a pass of their own
    assert lower_calls == [2]
