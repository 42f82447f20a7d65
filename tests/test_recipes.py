"""The recipe room: seed bit for bit, readers' layouts, the deep reader at L=0, writers' selection."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from companion.engine.config import ConfigError, EngramConfig
from companion.engine.cycle import Engine, chat_ids
from companion.engine.recipes import get_recipe, recipe_names
from companion.engine.recipes.base import Placement, Written
from companion.engine.recipes.writers import Select, sink_positions

FIXTURE = Path(__file__).parent / "fixtures" / "seed_engram.safetensors"


def test_seed_recipe_is_the_pre_recipe_cycle_bit_for_bit(tiny_lm):
    # The fixture was written by the hard-wired cycle before the recipe room existed.
    from tests.fixtures.make_seed_engram import seed_engrams

    # Written on one thread (the fixture's docstring says why bits depend on the thread count).
    want = load_file(str(FIXTURE))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        got = seed_engrams(tiny_lm)
    finally:
        torch.set_num_threads(threads)
    for name in want:
        assert torch.equal(got[name], want[name]), name


def test_unknown_recipe_is_refused_with_the_list():
    with pytest.raises(ConfigError, match="unknown recipe 'nope'.*seed"):
        EngramConfig(recipe="nope")


def test_legacy_config_dicts_are_the_seed_recipe():
    legacy = {"injection": "prepend-embeds", "layer": 16, "pooling": "chunk-mean",
              "scaling": "embedding-mean-norm", "slots": 32}
    assert EngramConfig.from_dict(legacy) == EngramConfig()
    assert EngramConfig.from_dict(legacy).recipe == "seed"


def test_framed_reader_puts_slots_inside_the_user_message(tiny_lm):
    eng = Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe="select-deep"))
    vec = torch.randn(4, tiny_lm.hidden_size + 1)
    p = eng.place(vec, "What is my cactus called?")
    tok = tiny_lm.tokenizer
    text = tok.decode(p.ids)
    assert text.index("Earlier I told you:") < text.index("What is my cactus called?")
    assert p.slots == list(range(p.slots[0], p.slots[0] + 4)) and p.depth == 2
    assert tok.decode(p.ids[p.content:]).lstrip().startswith("What is my cactus called?")
    assert tok.decode(p.ids[p.content:p.user_end]).strip() == "What is my cactus called?"
    assert tok.decode(p.ids[: p.slots[0]]).endswith("user\nEarlier I told you: ")
    # no engram: the plain prompt, no frame
    assert eng.place(None, "hi").ids == chat_ids(tok, "hi")


def test_deep_reader_at_layer_0_equals_the_unscaled_prefix_reader(tiny_lm):
    from companion.engine.recipes.readers import PrefixReader

    deep = Engine(tiny_lm, EngramConfig(layer=0, slots=4, recipe="deep"))
    assert deep.reader.depth_is_layer
    vec = torch.randn(4, tiny_lm.hidden_size)
    p = deep.place(vec, "hello")
    assert p.depth == 0
    plain = PrefixReader(keep_first=True, scaling="none")
    q = plain.place(tiny_lm.tokenizer, plain.vectors(vec, deep.embed_norm), "hello", None, layer=0)
    assert p.ids == q.ids and p.slots == q.slots
    with torch.no_grad():
        with deep.writing([(0, p.slots, p.vectors)], p.depth):  # pre-hook on block 1's input
            a = tiny_lm.model(inputs_embeds=deep.embeds_of(p)).logits
        emb = deep.embed(q.ids).clone()
        emb[0, q.slots] = q.vectors  # straight into the input embeddings
        b = tiny_lm.model(inputs_embeds=emb).logits
    assert torch.allclose(a, b, atol=1e-5)
    # and the written vectors do change the output (the hook is not a no-op)
    with torch.no_grad():
        c = tiny_lm.model(inputs_embeds=deep.embeds_of(p)).logits
    assert not torch.allclose(a, c, atol=1e-3)


def test_deep_reader_writes_the_engram_into_the_layer_L_residual(tiny_lm):
    eng = Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe="deep-framed"))
    vec = torch.randn(4, tiny_lm.hidden_size) * 3
    p = eng.place(vec, "hello")
    seen = []
    h = tiny_lm.model.get_decoder().layers[2].register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    try:
        with torch.no_grad(), eng.writing([(0, p.slots, p.vectors)], p.depth):
            tiny_lm.model(inputs_embeds=eng.embeds_of(p))
    finally:
        h.remove()
    # hooks run in registration order: ours saw the stream before the write; rerun to see after
    with torch.no_grad(), eng.writing([(0, p.slots, p.vectors)], p.depth):
        after = []
        h = tiny_lm.model.get_decoder().layers[2].register_forward_hook(lambda m, a, o: after.append(a[0].clone()))
        try:
            tiny_lm.model(inputs_embeds=eng.embeds_of(p))
        finally:
            h.remove()
    assert torch.equal(after[0][0, p.slots], vec)
    assert not torch.equal(seen[0][0, p.slots], vec)


def test_select_keeps_the_most_salient_states_in_order_and_decays_old_ones():
    states = torch.arange(6 * 2, dtype=torch.float32).reshape(6, 2) + 1
    p = Placement(ids=list(range(6)), content=1)
    sur = torch.tensor([0.0, 5.0, 1.0, 9.0, 2.0, 7.0])
    w = Written(states, p, sur)
    new = Select(decay=0.5).write(w, 3)
    assert new[:, -1].tolist() == [5.0, 9.0, 7.0]  # positions 1, 3, 5 in text order
    assert torch.equal(new[:, :-1], states[[1, 3, 5]])
    # next turn: old saliences halve (2.5, 4.5, 3.5) and compete with the new tokens (4.0 and 1.0)
    w2 = Written(states[:3] * 10, Placement(ids=list(range(3)), content=1), torch.tensor([0.0, 4.0, 1.0]), engram=new)
    newer = Select(decay=0.5).write(w2, 3)
    assert newer[:, -1].tolist() == [4.5, 3.5, 4.0]


def test_sink_positions_finds_massive_activations():
    s = torch.ones(5, 3)
    s[2] *= 50
    assert sink_positions(s) == [0, 2]


@pytest.mark.parametrize("name", ["seed", "sink", "centred", "framed", "deep-framed", "select-deep"])
def test_every_recipe_runs_a_rolling_session_with_a_fixed_prompt_size(tiny_lm, name):
    eng = Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe=name))
    engram, sizes = None, []
    for text in ["I named my cactus Vornelk.", "Nice weather today.", "What is my cactus called?"]:
        res = eng.run_turn(engram, text, max_new_tokens=4)
        assert res.engram.shape == (4, eng.width) and torch.isfinite(res.engram).all()
        sizes.append(len(eng.place(res.engram, "x").ids))
        engram = res.engram
    assert len(set(sizes)) == 1


@pytest.mark.parametrize("name", ["seed", "centred", "select-deep", "deep-framed"])
def test_generation_states_equal_a_plain_forward_for_every_recipe(tiny_lm, name):
    eng = Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe=name))
    first = eng.run_turn(None, "I named my cactus Vornelk.", max_new_tokens=5)
    a = eng.run_turn(first.engram, "and again", max_new_tokens=5, reuse_states=True)
    b = eng.run_turn(first.engram, "and again", max_new_tokens=5, reuse_states=False)
    assert a.reply == b.reply
    assert torch.allclose(a.engram, b.engram, atol=1e-4, rtol=1e-3)  # salience: logits via cache vs one pass


def test_every_registered_recipe_describes_itself():
    for name in recipe_names():
        r = get_recipe(name)
        assert r.description and r.writer and r.reader


def test_select_user_only_never_keeps_the_reply_however_surprising():
    states = torch.arange(6 * 2, dtype=torch.float32).reshape(6, 2)
    p = Placement(ids=list(range(6)), content=1, user_end=3)  # user text at 1-2, the reply from 3
    sur = torch.tensor([0.0, 5.0, 1.0, 9.0, 2.0, 7.0])
    assert Select(decay=1.0).write(Written(states, p, sur), 2)[:, -1].tolist() == [9.0, 7.0]
    new = Select(decay=1.0, user_only=True).write(Written(states, p, sur), 2)
    assert new[:, -1].tolist() == [5.0, 1.0] and torch.equal(new[:, :-1], states[[1, 2]])


def test_select_user_recipe_keeps_only_user_text_through_the_engine(tiny_lm):
    eng = Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe="select-user"))
    turn = eng.turn_states(None, "Vornelk", "Absolutely fascinating, said the quantum walrus.")
    engram = eng.absorb(None, "Vornelk", "Absolutely fascinating, said the quantum walrus.").engram
    user = eng.place(None, "Vornelk")
    n = user.user_end - user.content  # the user's tokens: all the writer may keep
    assert engram.shape[0] == n <= 4
    assert torch.allclose(engram[:, :-1], turn[user.content:user.user_end].float(), atol=1e-5)


def test_select_span_keeps_a_window_around_the_peak_as_one_statement():
    states = torch.arange(12 * 2, dtype=torch.float32).reshape(12, 2)
    p = Placement(ids=list(range(12)), content=1, user_end=10)  # user text 1-9, the reply 10-11
    sur = torch.tensor([0.0, 1, 2, 1, 1, 1, 8, 1, 1, 1, 30, 30])
    first = Select(decay=1.0, per_turn=1, user_only=True, span=4).write(Written(states, p, sur), 8)
    # the peak (position 6) with span // 4 = 1 token after it: positions 4-7, all scored by the peak
    assert torch.equal(first[:, :-1], states[[4, 5, 6, 7]]) and first[:, -1].tolist() == [8.0] * 4
    # a full engram: a louder statement replaces the weakest whole one, a quieter one does not get in
    full = torch.cat([first, torch.cat([states[:4] + 100, torch.full((4, 1), 5.0)], dim=1)])
    loud = Written(states + 1000, p, sur * 2, engram=full)
    after = Select(decay=1.0, per_turn=1, user_only=True, span=4).write(loud, 8)
    assert after[:, -1].tolist() == [8.0] * 4 + [16.0] * 4
    quiet = Written(states + 1000, p, sur / 4, engram=full)
    assert torch.equal(Select(decay=1.0, per_turn=1, user_only=True, span=4).write(quiet, 8), full)


def test_select_per_turn_fills_empty_slots_then_replaces_at_most_m():
    states = torch.arange(6 * 2, dtype=torch.float32).reshape(6, 2)
    sur = torch.tensor([0.0, 5.0, 1.0, 9.0, 2.0, 7.0])
    first = Select(decay=1.0, per_turn=1).write(Written(states, Placement(ids=list(range(6)), content=1), sur), 3)
    assert first[:, -1].tolist() == [5.0, 9.0, 7.0]  # empty engram: the turn fills all three
    louder = Written(states[:4] + 100, Placement(ids=list(range(4)), content=1), torch.tensor([0.0, 20., 30., 40.]),
                     engram=first)
    second = Select(decay=1.0, per_turn=1).write(louder, 3)
    assert second[:, -1].tolist() == [9.0, 7.0, 40.0]  # only the loudest new token gets in, the weakest slot goes


def test_select_whole_words_keeps_a_rare_words_pieces_together():
    # positions 1-3 are one word (surprise 9, 2, 1); 4 and 5 are words of their own (5 and 4)
    states = torch.arange(6 * 2, dtype=torch.float32).reshape(6, 2)
    sur = torch.tensor([0.0, 9.0, 2.0, 1.0, 5.0, 4.0])
    words = [True, True, False, False, True, True]
    w = Written(states, Placement(ids=list(range(6)), content=1), sur, words=words)
    by_token = Select(decay=1.0).write(w, 3)
    assert torch.equal(by_token[:, :-1], states[[1, 4, 5]])  # the word's weak pieces lose to 5 and 4
    whole = Select(decay=1.0, whole_words=True).write(w, 3)
    assert torch.equal(whole[:, :-1], states[[1, 2, 3]]) and whole[:, -1].tolist() == [9.0, 9.0, 9.0]


def test_fill_whole_takes_groups_whole_and_skips_one_that_no_longer_fits():
    from companion.engine.recipes.writers import fill_whole

    assert fill_whole([9.0, 9.0, 9.0, 5.0, 4.0], [0, 0, 0, 1, 2], 3) == [0, 1, 2]
    assert fill_whole([9.0, 9.0, 9.0, 5.0, 4.0], [0, 0, 0, 1, 2], 2) == [3, 4]
    assert fill_whole([1.0, 6.0, 6.0, 3.0], [0, 1, 1, 2], 3) == [1, 2, 3]


def test_select_whole_words_evicts_a_word_whole_not_its_last_pieces():
    # engram of 4: a 3-piece word (salience 6) and one token (8); a new turn brings two words of 7
    # and 2. By token, one slot is free for '7', and a piece of the 6-word would go; whole words:
    # the 6-word leaves entirely and both new words fill the room.
    old = torch.cat([torch.eye(4, 3), torch.tensor([[6.0], [6.0], [6.0], [8.0]])], dim=1)
    states = torch.full((4, 3), 5.0)
    w = Written(states, Placement(ids=list(range(4)), content=1), torch.tensor([0.0, 7.0, 2.0, 2.0]),
                engram=old, words=[True, True, True, False])
    new = Select(decay=1.0, per_turn=3, whole_words=True).write(w, 4)
    assert new[:, -1].tolist() == [8.0, 7.0, 2.0, 2.0]
    by_token = Select(decay=1.0, per_turn=3).write(Written(states, w.placement, w.surprise, engram=old), 4)
    assert by_token[:, -1].tolist() == [6.0, 6.0, 8.0, 7.0]


def test_select_whole_words_lets_a_long_name_into_a_full_engram():
    # a full engram of 4 single-token words (salience 1..4); the turn brings a 3-piece name (10) and
    # two plain words. per_turn=1 counts words: the name enters whole and the 3 weakest slots go.
    old = torch.cat([torch.eye(4, 3), torch.tensor([[1.0], [2.0], [3.0], [4.0]])], dim=1)
    states = torch.full((6, 3), 5.0)
    sur = torch.tensor([0.0, 10.0, 3.0, 2.0, 6.0, 5.0])
    w = Written(states, Placement(ids=list(range(6)), content=1), sur, engram=old,
                words=[True, True, False, False, True, True])
    new = Select(decay=1.0, per_turn=1, whole_words=True).write(w, 4)
    assert new[:, -1].tolist() == [4.0, 10.0, 10.0, 10.0]
    # by token, per_turn=1 lets only the name's first piece in
    by_token = Select(decay=1.0, per_turn=1).write(Written(states, w.placement, sur, engram=old), 4)
    assert by_token[:, -1].tolist() == [2.0, 3.0, 4.0, 10.0]


def test_lead_in_joins_the_words_before_a_rare_one_but_not_template_tokens():
    from companion.engine.recipes.writers import lead_in

    # words: 'a'(0.3) 'village'(1.4) 'called'(5.0) 'Zyplyn'(13.4, two pieces) ','(1.5)
    sal, group = lead_in([0.3, 1.4, 5.0, 13.4, 13.4, 1.5], [True, True, True, True, False, True], 2)
    assert sal == [0.3, 13.4, 13.4, 13.4, 13.4, 1.5]  # 'a' is below the floor: it joins nothing
    assert group == [0, 3, 3, 3, 3, 4]


def test_select_context_brings_a_name_in_with_the_words_before_it():
    # a full engram (4 slots, salience 6 to 6.75); the turn: 'called'(2) 'Zyplyn'(9, 2 pieces) 'ok'(3)
    old = torch.cat([torch.eye(4, 3), torch.tensor([[6.0], [6.25], [6.5], [6.75]])], dim=1)
    states = torch.arange(5 * 3, dtype=torch.float32).reshape(5, 3)
    sur = torch.tensor([0.0, 2.0, 9.0, 9.0, 3.0])
    w = Written(states, Placement(ids=list(range(5)), content=1), sur, engram=old,
                words=[True, True, True, False, True])
    plain = Select(decay=1.0, per_turn=1, whole_words=True).write(w, 4)
    assert plain[:, -1].tolist() == [6.5, 6.75, 9.0, 9.0]  # the name alone; the two weakest slots go
    ctx = Select(decay=1.0, per_turn=1, whole_words=True, context=1).write(w, 4)
    assert ctx[:, -1].tolist() == [6.75, 9.0, 9.0, 9.0] and torch.equal(ctx[1:, :-1], states[[1, 2, 3]])


def test_word_starts_joins_the_pieces_of_an_invented_name(tokenizer):
    from companion.engine.chat_format import word_starts

    ids = tokenizer("I grew up in Zyplyn, by 2019.", add_special_tokens=False)["input_ids"]
    words, begin = [], 0
    starts = word_starts(tokenizer, ids)
    for i in range(1, len(ids) + 1):
        if i == len(ids) or starts[i]:
            words.append(tokenizer.decode(ids[begin:i]).strip())
            begin = i
    # this tokenizer gives the space before a number a token of its own: a "word" of no letters
    assert words == ["I", "grew", "up", "in", "Zyplyn", ",", "by", "", "2019", "."]


def test_select_words_recipe_reads_word_starts_through_the_engine(tiny_lm):
    eng = Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe="select-words"))
    seen = []
    original = eng.writer.write
    eng.writer = type(eng.writer)(**{**eng.writer.__dict__})  # a copy whose write we can watch
    object.__setattr__(eng.writer, "write", lambda w, n, f=None: seen.append(w.words) or original(w, n, f))
    eng.absorb(None, "I named my cactus Vornelk.", "Nice.")
    assert seen and seen[0] is not None and len(seen[0]) > 5 and not all(seen[0])


def test_chunk_mean_drops_sinks_and_centres_by_hand():
    from companion.engine.recipes.writers import ChunkMean

    states = torch.tensor([[100.0, 0.0], [1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    w = Written(states, Placement(ids=list(range(5))))
    assert torch.allclose(ChunkMean().write(w, 2), torch.tensor([[104 / 3, 2.0], [6.0, 7.0]]))  # seed: sink in slot 0
    assert ChunkMean(drop_sinks=True).write(w, 2).tolist() == [[2.0, 3.0], [6.0, 7.0]]
    mean = torch.tensor([1.0, 1.0])
    assert ChunkMean(drop_sinks=True, centred=True).write(w, 2, {"mean": mean}).tolist() == [[1.0, 2.0], [5.0, 6.0]]


def test_prefix_reader_keep_first_puts_slots_after_the_first_token(tiny_lm):
    from companion.engine.recipes.readers import PrefixReader

    tok = tiny_lm.tokenizer
    ids = chat_ids(tok, "hi")
    v = torch.ones(3, tiny_lm.hidden_size)
    p = PrefixReader(keep_first=True).place(tok, v, "hi", None, layer=2)
    assert p.ids[0] == ids[0] and p.slots == [1, 2, 3] and p.ids[4:] == ids[1:]
    q = PrefixReader().place(tok, v, "hi", None, layer=2)
    assert q.slots == [0, 1, 2] and q.ids[3:] == ids
    assert tok.decode(q.ids[q.content:q.user_end]) == "hi"


def test_per_slot_scaling_gives_every_slot_the_embedding_norm():
    from companion.engine.recipes.readers import PrefixReader

    v = torch.tensor([[3.0, 4.0], [0.0, 10.0]])
    out = PrefixReader(scaling="per-slot").vectors(v, 2.0)
    assert torch.allclose(out.norm(dim=-1), torch.tensor([2.0, 2.0]))
    assert torch.allclose(PrefixReader(at_layer=True).vectors(v, 2.0), v)  # deep readers never rescale


def test_centred_recipe_pins_its_mean_state_by_hash(tiny_lm):
    eng = Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe="centred"))
    assert len(eng.config.fixed) == 64 and eng.fixed["mean"].shape == (tiny_lm.hidden_size,)
    assert Engine(tiny_lm, eng.config).config == eng.config  # the same model gives the same hash
    with pytest.raises(ConfigError, match="fixed tensors"):
        Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe="centred", fixed="0" * 64))


def test_a_selecting_session_resumes_and_moves_while_its_engram_is_not_yet_full(tiny_lm, tmp_path):
    from companion.app.service import Companion
    from companion.app.transfer import export_session, import_session

    url = f"sqlite:///{tmp_path / 'c.db'}"
    comp = Companion(db_url=url, lm=tiny_lm, config=EngramConfig(layer=2, slots=64, recipe="select-sticky"),
                     max_new_tokens=3, quiet=True)
    comp.say("s", "Hi.")
    _, views = comp.show("s")
    rows = int(views[0].engram_shape.split(",")[0])
    assert 1 <= rows < 64  # a short first turn fills only part of the engram
    comp.say("s", "My cactus is Vornelk.")  # resumes from the partial engram (not refused)
    comp.close()
    path = tmp_path / "s.engram"
    export_session(open_store_for(url), "s", path)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    import_session(open_store_for(other), path)
    assert Companion(db_url=other, lm=tiny_lm, quiet=True).show("s")[0]["cycle"] == 2


def open_store_for(url):
    from memory_store import open_store

    return open_store(url)


@pytest.mark.parametrize("cut", [True, False])
def test_select_salience_from_generation_equals_a_plain_pass_when_the_length_limit_cuts(tiny_lm, cut):
    # min_new_tokens forces the end token to -inf while generating; the salience of the closing
    # token must still come from the model's real logits (finite, and equal to a plain pass).
    eng = Engine(tiny_lm, EngramConfig(layer=2, slots=64, recipe="select-sticky"))
    kw = {"max_new_tokens": 6, "min_new_tokens": 6 if cut else 0}
    a = eng.run_turn(None, "I named my cactus Vornelk.", reuse_states=True, **kw)
    b = eng.run_turn(None, "I named my cactus Vornelk.", reuse_states=False, **kw)
    assert torch.isfinite(a.engram).all()
    assert a.engram.shape == b.engram.shape and torch.allclose(a.engram, b.engram, atol=1e-4, rtol=1e-3)


def test_trace_session_names_the_tokens_a_select_engram_holds(tiny_lm):
    from companion.eval.harness.trace import trace_session

    turns = [("I named my cactus Vornelk.", "Nice."), ("The weather is grey today.", "Yes.")]
    sel = trace_session(Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe="select-words")), turns)
    assert all(s is not None for s in sel[0]) and {s.turn for s in sel[0]} == {0}
    assert {s.turn for s in sel[1]} <= {0, 1}
    texts = [s.text for s in sel[0]]
    assert all(t in "".join(turns[0]) or t.startswith("<|") or not t.strip() for t in texts)
    seed = trace_session(Engine(tiny_lm, EngramConfig(layer=2, slots=4, recipe="seed")), turns)
    assert all(s is None for s in seed[1])  # chunk means are no token's state
