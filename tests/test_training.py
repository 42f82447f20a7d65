"""The trained recipe and its training loop, on the tiny model (the real model only in scripts)."""

from __future__ import annotations

import hashlib
import math
import re

import pytest
import torch
from safetensors.torch import save_file

from companion.corpora.conversations import generated_conversations
from companion.engine.config import ConfigError, EngramConfig
from companion.engine.cycle import Engine
from companion.engine.recipes import mapped as M
from companion.engine.recipes import trained as T
from companion.engine.recipes.base import Placement, Written
from companion.engine.recipes.writers import Select
from companion.eval.harness.facts import TEMPLATES
from companion.training import Trainer, TurnBank, build_data
from companion.training.facts import TRAIN_TEMPLATES

CONFIG = EngramConfig(layer=2, slots=8, recipe="select-trained")
MAPPED = EngramConfig(layer=2, slots=8, recipe="select-mapped")


@pytest.fixture()
def weights(tmp_path, monkeypatch):
    """A weights file for the tiny model, used through the documented override."""
    path = tmp_path / "w.safetensors"
    save_file(T.init_params(64, seed=3), str(path))
    monkeypatch.setenv(T.ENV, str(path))
    return path


@pytest.fixture(scope="module")
def setup(tiny_lm):
    eng = Engine(tiny_lm, CONFIG, fixed=T.init_params(64, seed=0))
    data = build_data(seed=0, facts=12, talk=0, val_facts=4, talk_runs=generated_conversations(2, 6))
    return eng, data, TurnBank.build(eng, data.turns, data.firsts)


def _model_digest(model) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode() + t.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def test_with_a_huge_anchor_the_trained_writer_is_select_sticky():
    g = torch.Generator().manual_seed(0)
    states = torch.randn(9, 6, generator=g) * 5
    sur = torch.tensor([0.0, 5.0, 1.0, 9.0, 2.0, 7.0, 3.0, 8.0, 0.5])
    params = T.init_params(6, key_dim=4, seed=0, beta=1e4)
    first = Written(states, Placement(ids=list(range(9)), content=1), sur)
    a, s = T.Anchored().write(first, 4, params), Select(decay=1.0, per_turn=2).write(first, 4)
    assert torch.allclose(a, s, atol=1e-4)
    later = Written(states.flip(0), Placement(ids=list(range(9)), content=1), sur.flip(0) + 1, engram=s)
    a2, s2 = T.Anchored().write(Written(later.states, later.placement, later.surprise, a), 4, params), \
        Select(decay=1.0, per_turn=2).write(later, 4)
    assert torch.allclose(a2, s2, atol=1e-3)
    assert not torch.allclose(T.Anchored().write(first, 4, T.init_params(6, 4, 0, beta=0.0)), s, atol=1e-2)


def test_the_untrained_map_is_select_sticky_and_a_trained_one_keeps_each_slot_one_token():
    g = torch.Generator().manual_seed(0)
    states = torch.randn(9, 6, generator=g) * 5
    sur = torch.tensor([0.0, 5.0, 1.0, 9.0, 2.0, 7.0, 3.0, 8.0, 0.5])
    first = Written(states, Placement(ids=list(range(9)), content=1), sur)
    sticky = Select(decay=1.0, per_turn=2)
    m, s = M.Mapped().write(first, 4, M.init_map(6, rank=3)), sticky.write(first, 4)
    assert torch.equal(m, s)
    later = Written(states.flip(0), Placement(ids=list(range(9)), content=1), sur.flip(0) + 1, engram=s)
    assert torch.equal(M.Mapped().write(later, 4, M.init_map(6, rank=3)), sticky.write(later, 4))
    moved = {"a": torch.randn(6, 3, generator=g), "b": torch.randn(3, 6, generator=g)}
    m2 = M.Mapped().write(first, 4, moved)
    # the same tokens kept, in the same order, each changed only by its own correction
    assert torch.equal(m2[:, -1], s[:, -1])
    assert torch.allclose(m2[:, :-1], M.nudge(s[:, :-1], moved), atol=1e-5)
    assert not torch.allclose(m2, s, atol=1e-2)
    # an old slot is carried as stored: mapped once, when it entered
    again = M.Mapped().write(Written(states.flip(0), first.placement, sur.flip(0) + 1, engram=m2), 4, moved)
    kept_old = [i for i in range(4) if any(torch.equal(again[i], r) for r in m2)]
    assert len(kept_old) >= 2


@pytest.fixture(scope="module")
def mapped_setup(tiny_lm):
    eng = Engine(tiny_lm, MAPPED, fixed=M.init_map(64, seed=0))
    data = build_data(seed=0, facts=12, talk=0, val_facts=4, talk_runs=generated_conversations(2, 6))
    return eng, data, TurnBank.build(eng, data.turns, data.firsts)


@pytest.mark.parametrize("which", ["setup", "mapped_setup"])
def test_one_training_step_lowers_the_loss_and_leaves_the_model_bit_identical(which, request):
    eng, data, bank = request.getfixturevalue(which)
    before = _model_digest(eng.model)
    tr = Trainer(eng, bank, data, seed=0, steps=10, batch=4, lr=0.05)
    eps = data.train.batch(0, 0, 4, 2)
    with torch.no_grad():
        first = float(tr.losses(eps).mean())
    tr.train_step()  # step 0 draws exactly these episodes
    with torch.no_grad():
        after = float(tr.losses(eps).mean())
    assert after < first
    assert _model_digest(eng.model) == before
    assert all(not p.requires_grad for p in eng.model.parameters())


def test_a_resumed_run_takes_the_same_next_step(setup, tmp_path):
    eng, data, bank = setup
    a = Trainer(eng, bank, data, seed=1, steps=10, batch=2)
    a.train_step()
    a.save(tmp_path / "ck.safetensors")
    b = Trainer(eng, bank, data, seed=1, steps=10, batch=2)
    b.load(tmp_path / "ck.safetensors")
    assert b.step == 1
    assert a.train_step()["loss"] == b.train_step()["loss"]
    with pytest.raises(ConfigError, match="seed 1"):
        Trainer(eng, bank, data, seed=2, steps=10, batch=2).load(tmp_path / "ck.safetensors")


def test_turn_bank_round_trips(setup, tmp_path):
    _, data, bank = setup
    bank.save(tmp_path / "bank.safetensors")
    back = TurnBank.load(tmp_path / "bank.safetensors")
    assert back.turns == [tuple(t) for t in data.turns]
    for key, (states, sur) in bank.entries.items():
        assert torch.equal(back.entries[key][0], states) and back.entries[key][1] == pytest.approx(sur)


def test_other_weights_are_refused_and_the_session_round_trips(tiny_lm, tmp_path, weights, monkeypatch):
    from companion.app.service import Companion
    from companion.app.transfer import export_session, import_session
    from memory_store import open_store

    url = f"sqlite:///{tmp_path / 'c.db'}"
    comp = Companion(db_url=url, lm=tiny_lm, config=CONFIG, max_new_tokens=3, quiet=True)
    comp.say("s", "I drive a van I call Zorbo.")
    comp.say("s", "Nice weather.")
    comp.close()
    path = tmp_path / "s.engram"
    export_session(open_store(url), "s", path)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    import_session(open_store(other), path)
    moved = Companion(db_url=other, lm=tiny_lm, quiet=True)
    assert moved.show("s")[0]["cycle"] == 2
    moved.say("s", "Still here?")  # resumes with the same weights
    moved.close()

    changed = tmp_path / "w2.safetensors"
    save_file(T.init_params(64, seed=4), str(changed))
    monkeypatch.setenv(T.ENV, str(changed))
    again = Companion(db_url=url, lm=tiny_lm, max_new_tokens=3, quiet=True)
    with pytest.raises(Exception, match="fixed tensors"):
        again.say("s", "hello")


def test_shipped_file_with_another_sha256_is_refused(tiny_lm, tmp_path, monkeypatch):
    fake = tmp_path / "select-trained.safetensors"
    save_file(T.init_params(64, seed=5), str(fake))
    monkeypatch.delenv(T.ENV, raising=False)
    monkeypatch.setattr(T.ANCHORED_WEIGHTS, "path", fake)
    with pytest.raises(ConfigError, match="sha256 differs"):
        Engine(tiny_lm, CONFIG)
    monkeypatch.setattr(T.ANCHORED_WEIGHTS, "path", tmp_path / "absent.safetensors")
    with pytest.raises(ConfigError, match="no trained writer weights"):
        Engine(tiny_lm, CONFIG)


def test_mapped_weights_are_pinned_like_the_anchored_ones(tiny_lm, tmp_path, monkeypatch):
    monkeypatch.delenv(M.MAPPED_WEIGHTS.env, raising=False)
    fake = tmp_path / "select-mapped.safetensors"
    save_file(M.init_map(64, seed=5), str(fake))
    monkeypatch.setattr(M.MAPPED_WEIGHTS, "path", fake)
    with pytest.raises(ConfigError, match="sha256 differs"):
        Engine(tiny_lm, MAPPED)
    monkeypatch.setattr(M.MAPPED_WEIGHTS, "sha256", hashlib.sha256(fake.read_bytes()).hexdigest())
    assert Engine(tiny_lm, MAPPED).fixed["b"].shape == (M.RANK, 64)
    wrong = tmp_path / "wrong.safetensors"
    save_file(M.init_map(576, seed=0), str(wrong))
    monkeypatch.setenv(M.MAPPED_WEIGHTS.env, str(wrong))
    with pytest.raises(ConfigError, match="hidden size 576"):
        Engine(tiny_lm, MAPPED)
    save_file(T.init_params(64, seed=0), str(wrong))
    with pytest.raises(ConfigError, match="lacks the trained writer's tensors a, b"):
        Engine(tiny_lm, MAPPED)


def test_weights_for_another_hidden_size_are_refused(tiny_lm, tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    save_file(T.init_params(576, seed=0), str(path))
    monkeypatch.setenv(T.ENV, str(path))
    with pytest.raises(ConfigError, match="hidden size 576"):
        Engine(tiny_lm, CONFIG)


def _ngrams(text: str, n: int = 4) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z']+", text.lower().replace("{x}", " ").replace("{animal}", " "))
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def test_training_templates_share_nothing_with_the_harness_templates():
    ours = {t[0] for t in TRAIN_TEMPLATES}
    assert not ours & {t[0] for t in TEMPLATES}
    theirs = set().union(*(_ngrams(t[1]) | _ngrams(t[2]) for t in TEMPLATES))
    for name, statement, question, _ in TRAIN_TEMPLATES:
        assert not (_ngrams(statement) | _ngrams(question)) & theirs, name


def test_chat_episodes_end_in_a_real_chat_line_and_leave_the_other_draws_alone():
    talk = generated_conversations(2, 6)
    plain = build_data(seed=0, facts=12, talk=0, val_facts=4, talk_runs=talk)
    chat = build_data(seed=0, facts=12, talk=0, val_facts=4, talk_runs=talk, chat_share=0.5)
    assert chat.turns == plain.turns
    talk_texts = {t for run in talk for t in run}
    facts = {f.statement for _, f in plain.train.facts}
    eps = [e for step in range(10) for e in chat.train.batch(0, step, 8, 4)]
    kinds = {e.kind for e in eps}
    assert kinds == {"qa", "recon", "chat"}
    for e in eps:
        if e.kind == "chat":
            assert (e.prompt, e.target) in talk_texts and e.prompt not in facts
    from companion.training.episodes import EpisodeSampler
    with pytest.raises(ValueError, match="texts"):
        EpisodeSampler(plain.train.facts, plain.train.talk, chat_share=0.2)


def test_absent_episodes_ask_about_a_fact_never_told_in_that_life():
    from companion.training.episodes import ABSENT_REPLY

    talk = generated_conversations(2, 6)
    data = build_data(seed=0, facts=20, talk=0, val_facts=4, talk_runs=talk, absent_share=0.5)
    by_turn = dict(data.train.facts)
    questions = {f.question: f.template for _, f in data.train.facts}
    absent = [e for step in range(10) for e in data.train.batch(0, step, 8, 4) if e.kind == "absent"]
    assert len(absent) > 10
    for e in absent:
        told = {by_turn[t].template for t in e.turns if t in by_turn}
        assert e.target == ABSENT_REPLY and questions[e.prompt] not in told


def test_quiet_episodes_ask_what_was_never_told_and_target_the_models_own_reply(setup):
    from companion.batched.batch import answer_many
    from companion.training.episodes import QUIET

    eng, plain, bank = setup
    talk = generated_conversations(2, 6)
    data = build_data(seed=0, facts=12, talk=0, val_facts=4, talk_runs=talk, quiet_share=0.5)
    assert data.turns == plain.turns
    by_turn = dict(data.train.facts)
    questions = {f.question: f.template for _, f in data.train.facts}
    talk_users = {u for run in talk for u, _ in run}
    quiet = [e for step in range(10) for e in data.train.batch(0, step, 8, 4) if e.kind == "quiet"]
    assert len(quiet) > 10 and {e.prompt in talk_users for e in quiet} == {True, False}  # both halves drawn
    for e in quiet:
        told = {by_turn[t].template for t in e.turns if t in by_turn}
        assert e.target == QUIET and (e.prompt in talk_users or questions[e.prompt] not in told)
    tr = Trainer(eng, bank, data, seed=0, steps=10, batch=4)
    e = quiet[0]
    assert tr.own_reply(e.prompt) == answer_many(eng, [None], [e.prompt], max_new_tokens=24)[0]
    # the target is that reply: its loss is the NLL of those tokens, not of the empty placeholder
    with torch.no_grad():
        got = float(tr.losses([e])[0])
        want = float(tr.losses([type(e)(e.turns, e.prompt, tr.own_reply(e.prompt), "qa", e.k)])[0])
    assert got == want
    assert "quiet1" in tr.validate(ks=(1,), per_k=2)


def test_tensors_digest_is_exact():
    from companion.training.loop import tensors_digest

    a = {"x": torch.ones(3), "y": torch.zeros(2)}
    assert tensors_digest(a) == tensors_digest({"y": torch.zeros(2), "x": torch.ones(3)})
    assert tensors_digest(a) != tensors_digest({"x": torch.ones(3) + 1e-7, "y": torch.zeros(2)})


def test_examples_in_the_docstrings():
    import doctest

    from companion.training import episodes, loop
    for module in (M, T, loop, episodes):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_a_mapped_session_round_trips_and_other_weights_are_refused(tiny_lm, tmp_path, monkeypatch):
    from companion.app.service import Companion
    from companion.app.transfer import export_session, import_session
    from memory_store import open_store

    trained = M.init_map(64, seed=3)
    trained["b"] = torch.randn(M.RANK, 64, generator=torch.Generator().manual_seed(1)) * 0.1  # not the identity
    path = tmp_path / "m.safetensors"
    save_file(trained, str(path))
    monkeypatch.setenv(M.MAPPED_WEIGHTS.env, str(path))
    url = f"sqlite:///{tmp_path / 'c.db'}"
    comp = Companion(db_url=url, lm=tiny_lm, config=MAPPED, max_new_tokens=3, quiet=True)
    comp.say("s", "I drive a van I call Zorbo.")
    comp.say("s", "Nice weather.")
    comp.close()
    export_session(open_store(url), "s", tmp_path / "s.engram")
    other = f"sqlite:///{tmp_path / 'other.db'}"
    import_session(open_store(other), tmp_path / "s.engram")
    moved = Companion(db_url=other, lm=tiny_lm, quiet=True)
    assert moved.show("s")[0]["cycle"] == 2
    moved.say("s", "Still here?")
    moved.close()
    save_file(M.init_map(64, seed=3), str(tmp_path / "identity.safetensors"))
    monkeypatch.setenv(M.MAPPED_WEIGHTS.env, str(tmp_path / "identity.safetensors"))
    with pytest.raises(Exception, match="fixed tensors"):
        Companion(db_url=url, lm=tiny_lm, max_new_tokens=3, quiet=True).say("s", "hello")


def test_the_avoid_term_pushes_down_opening_with_the_held_answer(mapped_setup):
    eng, plain, bank = mapped_setup
    data = build_data(seed=0, facts=12, talk=0, val_facts=4, talk_runs=generated_conversations(2, 6), quiet_share=1.0)
    quiet = data.train.batch(0, 0, 4, 2)
    held = {f.answer for _, f in data.train.facts}
    assert all(e.kind == "quiet" and e.avoid in held for e in quiet)
    plain_tr = Trainer(eng, bank, data, seed=0, steps=10, batch=4)
    tr = Trainer(eng, bank, data, seed=0, steps=10, batch=4, lr=0.05, avoid_weight=1.0)
    e = quiet[0]
    ids = tr.openings(e.avoid, tr.own_reply(e.prompt))
    assert ids and tok_first(eng, e.avoid) in ids + [tok_first(eng, tr.own_reply(e.prompt))]
    with torch.no_grad():
        nll, both = float(plain_tr.losses([e])[0]), float(tr.losses([e])[0])
        assert both > nll == float(tr.losses([e], avoid=False)[0])  # the term adds -log(1 - p) > 0

    def opening_p() -> float:
        engram = tr.engram_of(e)
        from companion.training.loop import answer_losses
        with torch.no_grad():
            # a huge weight makes the term (about weight * p) stand clear of float32 rounding
            withp = float(answer_losses(eng, [engram], [e.prompt], [tr.own_reply(e.prompt)], [ids], 1e4)[0])
            without = float(answer_losses(eng, [engram], [e.prompt], [tr.own_reply(e.prompt)])[0])
        return 1 - math.exp((without - withp) / 1e4)  # p of opening with the held answer

    before = opening_p()
    for _ in range(3):  # steps on this episode's loss alone
        tr.opt.zero_grad()
        (tr.losses([e]) - tr.losses([e], avoid=False)).sum().backward()  # the avoid term's gradient alone
        tr.opt.step()
    assert opening_p() < before


def tok_first(eng, text: str) -> int:
    return eng.tokenizer(text, add_special_tokens=False)["input_ids"][0]


def test_new_sessions_get_a_trained_default_only_where_its_weights_fit(tiny_lm, tmp_path, monkeypatch):
    from companion.engine.recipes import base

    monkeypatch.setattr(base, "DEFAULT", "select-mapped")
    monkeypatch.delenv(M.MAPPED_WEIGHTS.env, raising=False)
    assert base.default_for(tiny_lm) == base.PORTABLE  # the shipped map is for hidden size 576
    fits = tmp_path / "tiny-map.safetensors"
    save_file(M.init_map(64, seed=1), str(fits))
    monkeypatch.setenv(M.MAPPED_WEIGHTS.env, str(fits))
    assert base.default_for(tiny_lm) == "select-mapped"
    # a damaged shipped file is an error to report, not a reason to fall back quietly
    monkeypatch.delenv(M.MAPPED_WEIGHTS.env)
    monkeypatch.setattr(M.MAPPED_WEIGHTS, "sha256", "0" * 64)
    with pytest.raises(ConfigError, match="not the shipped"):
        base.default_for(tiny_lm)


def test_next_episodes_replay_a_conversation_and_target_its_true_next_reply(setup):
    eng, plain, bank = setup
    talk = generated_conversations(2, 6)
    data = build_data(seed=0, facts=12, talk=0, val_facts=4, talk_runs=talk, next_share=0.5)
    assert data.turns == plain.turns
    # with next_share 0 nothing else changes: the same seed draws the same episodes as before
    assert build_data(seed=0, facts=12, talk=0, val_facts=4, talk_runs=talk).train.batch(0, 3, 8, 4) \
        == plain.train.batch(0, 3, 8, 4)
    facts = dict(data.train.facts)
    nxt = [e for step in range(10) for e in data.train.batch(0, step, 8, 4) if e.kind == "next"]
    assert len(nxt) > 10 and {bool(e.avoid) for e in nxt} == {True, False}  # with and without a held fact
    for e in nxt:
        lived = list(e.turns[1:] if e.avoid else e.turns)
        if e.avoid:
            assert facts[e.turns[0]].answer == e.avoid
        run = next(r for r in data.train.talk if r[0] == lived[0])  # a conversation from its start ...
        assert lived == run[:len(lived)] and 1 <= e.k == len(lived) <= 5
        assert (e.prompt, e.target) == data.turns[run[len(lived)]]  # ... then its own next turn
    tr = Trainer(eng, bank, data, seed=0, steps=10, batch=4)
    val = tr.validate(ks=(1,), per_k=2, quiet=False, nxt=True)
    assert set(val) == {"1", "next"} and math.isfinite(val["next"]) and val["next"] != 0.0


def test_mix_weights_averages_two_runs_and_refuses_different_writers(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    from safetensors.torch import load_file

    spec = importlib.util.spec_from_file_location("mix_weights", Path(__file__).parents[1] / "scripts" / "research" / "mix_weights.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    one, two = M.init_map(8, rank=2, seed=1), M.init_map(8, rank=2, seed=2)
    two["b"] = torch.ones(2, 8)
    save_file(one, str(tmp_path / "one.safetensors"))
    save_file(two, str(tmp_path / "two.safetensors"))
    assert script.main([str(tmp_path / "one.safetensors"), str(tmp_path / "two.safetensors"), "--share", "0.25",
                        "--out", str(tmp_path / "mix")]) == 0
    got = load_file(str(tmp_path / "mix" / "weights.safetensors"))
    assert torch.allclose(got["a"], 0.25 * one["a"] + 0.75 * two["a"]) and torch.allclose(got["b"], torch.full((2, 8), 0.75))
    save_file(M.init_map(8, rank=3, seed=1), str(tmp_path / "other.safetensors"))
    assert script.main([str(tmp_path / "one.safetensors"), str(tmp_path / "other.safetensors"), "--share", "0.5",
                        "--out", str(tmp_path / "bad")]) == 2
    assert "different tensors" in capsys.readouterr().err and not (tmp_path / "bad").exists()
