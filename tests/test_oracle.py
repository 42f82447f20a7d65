"""The oracle engram: vectors optimised per fact with the LM frozen (tiny model)."""

import pytest
import torch

from companion.engine import engram as E
from companion.eval.harness import oracle as O

STATEMENT = "I named my cactus Vornelk."


def _engine(tiny_lm, reader):
    return O.engine_for(tiny_lm, reader, layer=2, slots=4)


@pytest.mark.parametrize("reader", ["oracle:prefix", "framed", "deep", "deep-framed", "deep-framed-constrained"])
def test_optimising_lowers_the_reconstruction_loss(tiny_lm, reader):
    eng = _engine(tiny_lm, reader)
    _, constrained = O.ORACLE_READERS[O.reader_name(reader)]
    o = O.optimise(eng, STATEMENT, steps=8, lr=0.1, seed=0, constrained=constrained)
    assert o.steps == 8 and len(o.losses) == 9
    assert o.losses[-1] < o.losses[0]
    assert o.vectors.shape == (4, tiny_lm.hidden_size) and not o.vectors.requires_grad
    # the reported final loss is the loss of the returned vectors
    assert O.reconstruction_loss(eng, o.vectors, STATEMENT).item() == pytest.approx(o.losses[-1], rel=1e-5)


def test_the_model_is_untouched(tiny_lm):
    before = {k: v.clone() for k, v in tiny_lm.model.state_dict().items()}
    flags = [p.requires_grad for p in tiny_lm.model.parameters()]
    for reader in ("prefix", "deep-framed-constrained"):
        eng = _engine(tiny_lm, reader)
        o = O.optimise(eng, STATEMENT, steps=3, lr=0.1, seed=0, constrained=reader.endswith("constrained"))
        O.ask_with(eng, o.vectors, "What is my cactus called?", max_new_tokens=3)
    after = tiny_lm.model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in tiny_lm.model.parameters()] == flags
    assert all(p.grad is None for p in tiny_lm.model.parameters())
    assert len(tiny_lm.model.get_decoder().layers) == 4


def test_same_seed_same_vectors(tiny_lm):
    eng = _engine(tiny_lm, "deep-framed")
    a = O.optimise(eng, STATEMENT, steps=4, lr=0.1, seed=3)
    b = O.optimise(eng, STATEMENT, steps=4, lr=0.1, seed=3)
    c = O.optimise(eng, STATEMENT, steps=4, lr=0.1, seed=4)
    assert torch.equal(a.vectors, b.vectors) and a.losses == b.losses
    assert not torch.equal(a.vectors, c.vectors)


@pytest.mark.parametrize("reader", ["prefix", "framed", "deep", "deep-framed"])
def test_nll_and_greedy_answer_match_the_engine(tiny_lm, reader):
    # The oracle's own passes (a layer-L reader runs only the blocks above L) must
    # equal the engine's, given vectors the engine's scaling leaves as they are.
    eng = _engine(tiny_lm, reader)
    v = E.scale(torch.randn(4, tiny_lm.hidden_size, generator=torch.Generator().manual_seed(0)), eng.embed_norm)
    q, a = "What is my cactus called?", "Vornelk"
    total, n = O.nll_with(eng, v, q, a)
    want, m = eng.answer_nll(v, q, a)
    assert n == m and total == pytest.approx(want, rel=1e-4, abs=1e-4)
    reply = O.ask_with(eng, v, q, max_new_tokens=6)
    assert reply == eng.run_turn(v, q, max_new_tokens=6, repetition_penalty=1.0, update=False).reply


def test_constrained_vectors_keep_the_real_norm_in_the_subspace(tiny_lm):
    eng = _engine(tiny_lm, "deep-constrained")
    pool = O.real_pool(eng)
    sub = O.Subspace.fit(pool, 8)
    o = O.optimise(eng, STATEMENT, steps=3, lr=0.1, seed=0, constrained=True, k=8, pool=pool)
    norms = o.vectors.norm(dim=-1)
    assert torch.allclose(norms, torch.full_like(norms, pool.radius), rtol=1e-4)
    # direction lies in span(mean, basis): the residual after projecting onto it is ~0
    span = torch.linalg.qr(torch.cat([sub.mean[:, None], sub.basis], dim=1))[0]
    resid = o.vectors - (o.vectors @ span) @ span.T
    assert resid.norm() < 1e-3 * o.vectors.norm()
    assert 0 < o.explained <= 1


def test_reader_names():
    assert O.reader_name("oracle:deep-framed") == "deep-framed"
    with pytest.raises(KeyError, match="unknown oracle reader"):
        O.reader_name("oracle:nope")


def test_constrained_needs_a_layer_reader(tiny_lm):
    with pytest.raises(ValueError, match="layer"):
        O.optimise(_engine(tiny_lm, "prefix"), STATEMENT, steps=1, constrained=True)


def test_a_trial_record_and_the_table(tiny_lm):
    from companion.eval.harness.facts import facts_for

    eng = _engine(tiny_lm, "deep-framed")
    fact, _ = facts_for(0, 0)
    rec = O.run_trial(eng, fact, reader="oracle:deep-framed", trial=0, seed=0, steps=2, lr=0.1, max_new_tokens=3)
    assert rec["reader"] == "oracle:deep-framed" and rec["steps_run"] == 2
    assert rec["loss_final"] < rec["loss_start"] and isinstance(rec["correct"], bool)
    rows = O.summarise([rec, {**rec, "trial": 1, "correct": True}])
    assert rows[0]["trials"] == 2 and rows[0]["correct"] == 1 + rec["correct"]
    assert "| oracle:deep-framed |" in O.table_md(rows)
