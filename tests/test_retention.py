"""select-keep: the learned value decides what enters and what stays (tiny model; the real one only in scripts)."""

from __future__ import annotations

import doctest
import hashlib

import pytest
import torch
from safetensors.torch import save_file

from companion.corpora.conversations import generated_conversations
from companion.engine.config import ConfigError, EngramConfig
from companion.engine.cycle import Engine
from companion.engine.recipes import retention as R
from companion.engine.recipes.writers import Select
from companion.training import retention as TR

KEEP = EngramConfig(layer=2, slots=8, recipe="select-keep")
H = 64


def surprise_valued(hidden: int = H) -> dict[str, torch.Tensor]:
    """Parameters whose value is (a monotone function of) the token's own surprise alone."""
    p = R.init_value(hidden, seed=0)
    w1 = torch.zeros(2 * hidden + 2, R.VALUE_HIDDEN)
    w1[2 * hidden, 0] = 10.0  # the surprise feature (surprise / 10) into one unit
    w2 = torch.zeros(R.VALUE_HIDDEN)
    w2[0] = 1.0
    p.update(v_w1=w1, v_b1=torch.zeros(R.VALUE_HIDDEN), v_w2=w2, v_b2=torch.zeros(1))
    return {**R.init_map(hidden, seed=0), **p}


def test_the_pure_helpers_known_answers():
    assert doctest.testmod(R).failed == 0
    assert doctest.testmod(TR).failed == 0


def test_the_value_is_the_surprise_when_the_weights_say_so():
    g = torch.Generator().manual_seed(0)
    states, sur = torch.randn(5, H, generator=g), torch.tensor([1.0, 7.0, 3.0, 0.5, 12.0])
    v = R.value_scores(states, sur, surprise_valued())
    assert v.argsort().tolist() == sur.argsort().tolist()
    assert torch.allclose(v, torch.nn.functional.gelu(sur))


def test_a_statement_enters_a_full_engram_whole():
    """Where select-sticky lets a full engram take 2 new tokens a turn, a more valuable statement gets in whole."""
    writer, params, g = R.Retained(), surprise_valued(), torch.Generator().manual_seed(1)
    talk = torch.randn(8, H, generator=g)
    engram = writer.roll(None, talk, [2.0] * 8, list(range(8)), 8, params)  # eight one-token words, full
    assert engram.shape == (8, H + 1)
    fact = torch.randn(5, H, generator=g)
    after = writer.roll(engram, fact, [9.0, 8.0, 9.5, 7.0, 8.5], [0, 1, 1, 2, 3], 8, params)
    mapped = R.nudge(fact, params)
    assert TR.held_share(after, mapped) == 1.0
    # what select-sticky's cap would have done: at most 2 of the five
    sticky = Select(decay=1.0, per_turn=2)
    assert len(sticky.cap(list(range(5)), [9.0, 8.0, 9.5, 7.0, 8.5], 8, 8)) == 2
    # and the less valuable talk that follows does not push it out, however long it goes on
    for _ in range(100):
        after = writer.roll(after, torch.randn(6, H, generator=g), [3.0] * 6, list(range(6)), 8, params)
    assert TR.held_share(after, mapped) == 1.0


def test_a_word_comes_in_whole_or_not_at_all():
    writer, params, g = R.Retained(), surprise_valued(), torch.Generator().manual_seed(2)
    full = writer.roll(None, torch.randn(8, H, generator=g), [5.0] * 8, list(range(8)), 8, params)
    # a three-token word worth more than a slot, but only two slots' worth of room beats the margin
    states = torch.randn(4, H, generator=g)
    after = writer.roll(full, states, [9.0, 1.0, 1.0, 9.0], [0, 0, 0, 1], 8, params)
    share = TR.held_share(after, R.nudge(states[:3], params))
    assert share in (0.0, 1.0)


def test_equal_values_do_not_churn():
    writer, params, g = R.Retained(margin=0.5), surprise_valued(), torch.Generator().manual_seed(3)
    first = writer.roll(None, torch.randn(8, H, generator=g), [4.0] * 8, list(range(8)), 8, params)
    again = writer.roll(first, torch.randn(8, H, generator=g), [4.0] * 8, list(range(8)), 8, params)
    assert torch.equal(first, again)


@pytest.fixture(scope="module")
def keep_bank(tiny_lm):
    params = {**R.init_map(H, seed=0), **R.init_value(H, seed=0)}
    eng = Engine(tiny_lm, KEEP, fixed=params)
    talk = generated_conversations(2, 12)
    turns = [TR.Labelled(u, r, "talk") for run in talk for u, r in run]
    for n, stmt in enumerate(["I named my cactus Vornelk.", "My locker code is 4471.", "I live in apartment 812.",
                              "We say zoublin when it is cozy."]):
        turns.append(TR.Labelled(stmt, "Okay.", "fact", (0, len(stmt)), 1.0, held_out=n % 2 == 0))
    return eng, params, TR.LabelledBank.build(eng, turns)


def _digest(model) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode() + t.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def test_the_bank_labels_a_statement_and_not_the_talk(keep_bank):
    _, _, bank = keep_bank
    for t, target, states in zip(bank.turns, bank.targets, bank.states):
        assert target.shape[0] == states.shape[0]
        assert (target.sum() > 0) == (t.kind == "fact")
    fact = next(i for i, t in enumerate(bank.turns) if t.kind == "fact")
    assert bank.targets[fact].mean() > 0.8  # the statement is the whole user text


def test_labels_follow_the_statement_inside_small_talk(tokenizer):
    t = TR.Labelled("I had a long day. I named my cactus Vornelk.", "Okay.", "fact", (18, 44), 1.0)
    m = len(tokenizer(t.user, add_special_tokens=False)["input_ids"])
    target = TR.token_targets(tokenizer, t, m)
    n_talk = len(tokenizer("I had a long day.", add_special_tokens=False)["input_ids"])
    assert target[:n_talk].sum() == 0 and target[n_talk:].min() == 1.0


def test_training_lowers_the_loss_and_leaves_the_model_alone(keep_bank, tiny_lm):
    eng, params, bank = keep_bank
    before_model = _digest(tiny_lm.model)
    params = dict(params)
    train, _ = bank.split()
    with torch.no_grad():
        start = float(TR.value_loss(bank, train, params))
    TR.train_value(bank, params, steps=30, seed=0, lr=0.01, batch=len(train))
    with torch.no_grad():
        end = float(TR.value_loss(bank, train, params))
    assert end < start
    assert _digest(tiny_lm.model) == before_model
    assert torch.equal(params["b"], R.init_map(H, seed=0)["b"])  # the map is not trained here


def test_simulate_reports_what_the_writer_kept(keep_bank):
    eng, _, bank = keep_bank
    runs = TR.simulate(eng.writer, bank, surprise_valued(), warmup=2, cycles=[0, 3], trials=2, seed=0, slots=8)
    assert len(runs) == 2 and all(set(r["kept"]) == {0, 3} for r in runs)
    assert all(0.0 <= r["kept"][k] <= 1.0 for r in runs for k in (0, 3))


def test_weights_are_pinned_and_another_model_is_refused(tiny_lm, tmp_path, monkeypatch):
    monkeypatch.delenv(R.KEEP_WEIGHTS.env, raising=False)
    fake = tmp_path / "select-keep.safetensors"
    save_file(surprise_valued(), str(fake))
    monkeypatch.setattr(R.KEEP_WEIGHTS, "path", fake)
    with pytest.raises(ConfigError, match="sha256 differs"):
        Engine(tiny_lm, KEEP)
    wrong = tmp_path / "wrong.safetensors"
    save_file(surprise_valued(576), str(wrong))
    monkeypatch.setenv(R.KEEP_WEIGHTS.env, str(wrong))
    with pytest.raises(ConfigError, match="hidden size 576"):
        Engine(tiny_lm, KEEP)


def test_a_keep_session_round_trips_through_export_and_fork(tiny_lm, tmp_path, monkeypatch):
    from companion.app.fork import fork
    from companion.app.service import Companion
    from companion.app.transfer import export_session, import_session
    from memory_store import open_store

    path = tmp_path / "k.safetensors"
    save_file(surprise_valued(), str(path))
    monkeypatch.setenv(R.KEEP_WEIGHTS.env, str(path))
    url = f"sqlite:///{tmp_path / 'c.db'}"
    comp = Companion(db_url=url, lm=tiny_lm, config=KEEP, max_new_tokens=3, quiet=True)
    comp.say("s", "I drive a van I call Zorbo.")
    comp.say("s", "Nice weather today.")
    comp.close()
    store = open_store(url)
    fork(store, "s", "t")
    export_session(store, "s", tmp_path / "s.engram")
    store.close()
    other = f"sqlite:///{tmp_path / 'other.db'}"
    import_session(open_store(other), tmp_path / "s.engram")
    for db, name in ((other, "s"), (url, "t")):
        moved = Companion(db_url=db, lm=tiny_lm, quiet=True, max_new_tokens=3)
        assert moved.show(name)[0]["recipe"]["recipe"] == "select-keep"
        assert moved.say(name, "Still here?").cycle == 3
        moved.close()
