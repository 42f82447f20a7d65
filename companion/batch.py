"""Many sessions in one forward pass: the harnesses' throughput path.

Each row of a batch is an independent session (its own engram and text), so
results equal the one-at-a-time Engine methods to floating-point tolerance.
Rows may come from different engines (recipes) over one model: each row is
laid out and embedded by its own engine, and a reader that writes at a layer
gets its rows written there, so recipes of any depth share a pass.

    answer_many: left-padded greedy generation, no memory update -> one reply per row
    absorb_rows: right-padded, rows of one or several engines -> (engram, layer-L states) per row
    answer_rows: answer_many for rows of several engines; both split into
        passes of similar length (rows_by_length); answer_rows also scores a
        given answer teacher-forced from the prompt's KV cache
"""

from __future__ import annotations

import hashlib
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace

import torch

from .cycle import Engine, _cache_of, chat_ids, end_id, surprise_of
from .halves import distinct, fresh_cache, lower, splits, upper, with_lower
from .prefix import cache_for, common_head, head_class, run_head
from .recipes.base import Placement, Written

# Grouping costs in prompt-token units, measured for SmolLM2-135M on one CPU thread (prefill about
# 280 tokens/s, a decode step about 0.17 s at batch 6 and 0.43 s at batch 60): a reply call costs
# about 48 tokens' prefill per decode step whatever the batch, an absorb call one read of the weights.
# They only decide which rows share a pass; results do not depend on them.
DECODE_STEP_TOKENS = 48
PASS_TOKENS = 50
MAX_PASS_TOKENS = 16384  # padded tokens per pass: bounds activations and the KV cache
MAX_SURPRISE_TOKENS = 2048  # a surprise pass keeps [rows, width, vocab] float logits


def _engines(engines, n: int) -> list[Engine]:
    engines = list(engines) if isinstance(engines, (list, tuple)) else [engines] * n
    if any(e.model is not engines[0].model for e in engines):
        raise ValueError("rows of one pass must share one loaded model")
    return engines


def _padded(engines: list[Engine], placements: list[Placement], *, left: bool):
    """[B, W, H] embeddings, [B, W] mask and each row's offset (left padding shifts a row right)."""
    return _padded_behind(engines, placements, left=left, head=0)[:3]


def _padded_behind(engines: list[Engine], placements: list[Placement], *, left: bool, head: int):
    """_padded for rows behind a head they share (run apart: companion.prefix): [B, W, H] embeddings
    of each row after its first `head` ids, the [B, head + W] mask, each row's offset (slot s of a row
    sits at column s + offset of the embeddings; left padding goes between the head and the row's
    own ids) and the head's embeddings [1, head, H]."""
    rows = [e.embeds_of(p)[0] for e, p in zip(engines, placements)]
    width = max(r.shape[0] for r in rows) - head
    embeds = rows[0].new_zeros((len(rows), width, rows[0].shape[-1]))
    mask = torch.zeros((len(rows), head + width), dtype=torch.long, device=embeds.device)
    mask[:, :head] = 1
    offsets = []
    for i, r in enumerate(rows):
        n = r.shape[0] - head
        off = width - n if left else 0
        embeds[i, off: off + n] = r[head:]
        mask[i, head + off: head + off + n] = 1
        offsets.append(off - head)
    return embeds, mask, offsets, rows[0][None, :head]


def _writing(engines: list[Engine], placements: list[Placement], offsets: list[int]) -> ExitStack:
    """Context for one forward: every layer-writing row's vectors written at its reader's depth
    (input-depth rows were filled by embeds_of)."""
    by_depth: dict[int, tuple[Engine, list]] = {}
    for i, (e, p, off) in enumerate(zip(engines, placements, offsets)):
        if p.vectors is not None and p.slots and e.reader.depth_is_layer:
            by_depth.setdefault(p.depth, (e, []))[1].append((i, [s + off for s in p.slots], p.vectors))
    stack = ExitStack()
    for depth, (e, rows) in by_depth.items():
        stack.enter_context(e.writing(rows, depth))
    return stack


def _sharing(engines: list[Engine], placements: list[Placement]) -> tuple[int, list[int], list[int]] | None:
    """(depth, distinct rows, row -> its index) when rows share blocks 1..depth (companion.halves):
    every engram written at one layer, and some rows with the same ids; else None."""
    keys: list = []
    depths = set()
    for i, (e, p) in enumerate(zip(engines, placements)):
        if p.vectors is not None and p.slots and not e.reader.depth_is_layer:
            keys.append(i)  # its engram is in the input embeddings: a lower half of its own
            continue
        if p.vectors is not None and p.slots:
            depths.add(p.depth)
        keys.append(tuple(p.ids))
    rows, inverse = distinct(keys)
    if len(depths) != 1 or len(rows) == len(keys):
        return None
    depth = depths.pop()
    return (depth, rows, inverse) if splits(engines[0].model, depth) else None


def row_key(engine: Engine, p: Placement) -> tuple:
    """What a row's forward depends on beyond the shared model: its ids and where which vectors are
    written. Rows of different recipes with one key (say, two select writers that kept the same
    states) are the same row: it runs once."""
    if p.vectors is None or not p.slots:
        return tuple(p.ids), None
    v = p.vectors.detach().float().cpu().contiguous()
    digest = hashlib.blake2b(v.numpy().tobytes(), digest_size=16).digest()
    return tuple(p.ids), tuple(p.slots), p.depth, engine.reader.depth_is_layer, tuple(v.shape), digest


def forward_keeping(model, keep: int, **kw):
    """The model's output with logits for the last `keep` positions only (all where unsupported)."""
    try:
        return model(**kw, logits_to_keep=keep)
    except TypeError:
        return model(**kw)


def rows_by_length(lengths: list[int], *, per_pass: int, budget: int = MAX_PASS_TOKENS,
                   keys: list | None = None) -> list[list[int]]:
    """Row indices split into passes minimising sum(per_pass + rows x padded width), each pass at most
    `budget` padded tokens (unless one row alone exceeds it). A 70-token prompt padded to a
    1,500-token transcript costs 20x, while every extra pass costs its fixed share again.
    keys: rows of one key are ordered next to each other (so they tend to share a pass and its
    lower half, companion.halves); the costs do not depend on them.

    >>> rows_by_length([80, 1500, 90, 1400], per_pass=200)
    [[0, 2], [3, 1]]
    """
    group = distinct(keys)[1] if keys is not None else list(range(len(lengths)))
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], group[i]))
    best, cut = [0.0] + [float("inf")] * len(order), [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        width = lengths[order[j - 1]]
        for i in range(j - 1, -1, -1):
            if j - i > 1 and (j - i) * width > budget:
                break
            cost = best[i] + per_pass + (j - i) * width
            if cost < best[j]:
                best[j], cut[j] = cost, i
    passes, j = [], len(order)
    while j:
        passes.append(order[cut[j]:j])
        j = cut[j]
    return passes[::-1]


def _turn_placement(engine: Engine, engram, turn: tuple[str, str]) -> Placement:
    """A finished turn laid out by the engine's reader, closed by the end-of-turn id."""
    tok, (user, reply) = engine.tokenizer, turn
    engine.check_fits(engram, chat_ids(tok, user, reply) + [end_id(tok)], 0)
    p = engine.place(engram, user, reply)
    return Placement(p.ids + [end_id(tok)], p.slots, p.vectors, p.depth, p.content, p.user_end)


@torch.inference_mode()
def _absorb_forward(engines: list[Engine], placements: list[Placement], start: int, surprise: list[bool]):
    """Right-padded pass: (layer-L states [B, W, H], logits of positions start.. [B, W - start, V] or None).
    Logits are computed for every row when rows run whole, and only for the rows that need surprise
    (the others' are zeros) when the rows share their lower half."""
    model, layer = engines[0].model, engines[0].config.layer
    needs_logits = any(surprise)
    shared = _sharing(engines, placements) if needs_logits else None
    shares_lower = shared is not None and shared[0] == layer
    if needs_logits and not all(surprise) and not shares_lower:  # the rows that stop at the layer go apart
        return _absorb_apart(engines, placements, start, surprise)
    # A shared head stops short of the logits and, for a pass that stops at the layer, needs the
    # layer to be a block's output (hidden_states[L] of the last block has the final norm applied).
    runs_head = needs_logits or 0 < layer < model.config.num_hidden_layers
    head = common_head(placements, limit=start) if runs_head else 0
    embeds, mask, offsets, head_embeds = _padded_behind(engines, placements, left=False, head=head)
    head_cache, head_states = run_head(model, head_embeds, layer) if head else (None, None)

    def cache(rows: int):
        return cache_for(head_cache, rows) if head else None

    keep = head + embeds.shape[1] - start
    if shares_lower:  # the turn's own states come from the shared half
        _, rows, inverse = shared
        states = lower(model, embeds[rows], mask[rows], layer, cache=cache(len(rows)))[inverse]
        up = [i for i, s in enumerate(surprise) if s]  # only these need blocks L+1.. and the output layer
        with _writing([engines[i] for i in up], [placements[i] for i in up], [offsets[i] for i in up]):
            got = upper(model, states[up], mask[up], layer, keep=keep, cache=cache(len(up))).logits
        logits = got
        if len(up) < len(surprise):
            logits = got.new_zeros((len(surprise), *got.shape[1:]))
            logits[up] = got
    else:
        with _writing(engines, placements, offsets):
            if needs_logits:
                out = forward_keeping(model, keep, inputs_embeds=embeds, attention_mask=mask,
                                      output_hidden_states=True, use_cache=head > 0,
                                      **{engines[0]._cache_arg: cache(len(placements))})
                states, logits = out.hidden_states[layer], out.logits
                if logits.shape[1] != keep:  # a model without logits_to_keep gave them all
                    logits = logits[:, start - head:]
            elif head:
                states, logits = lower(model, embeds, mask, layer, cache=cache(len(placements))), None
            else:
                states, logits = engines[0].layer_states(embeds, mask), None
    if head:
        states = torch.cat([head_states.expand(len(placements), -1, -1), states], dim=1)
    return states, logits


def _absorb_apart(engines, placements, start: int, surprise: list[bool]):
    """_absorb_forward run separately for the rows that need surprise and for the others."""
    parts = [[i for i, s in enumerate(surprise) if s], [i for i, s in enumerate(surprise) if not s]]
    got = [_absorb_forward([engines[i] for i in idx], [placements[i] for i in idx], start, [s] * len(idx))
           for idx, s in zip(parts, (True, False))]
    width = max(g[0].shape[1] for g in got)
    states = got[0][0].new_zeros((len(placements), width, got[0][0].shape[-1]))
    logits = got[0][1].new_zeros((len(placements), width - start, got[0][1].shape[-1]))
    for idx, (st, lo) in zip(parts, got):
        states[idx, :st.shape[1]] = st
        if lo is not None:
            logits[idx, :lo.shape[1]] = lo
    return states, logits


@torch.inference_mode()
def _absorb_pass(engines: list[Engine], placements: list[Placement], engrams: list) -> list[tuple]:
    """One pass over placed turns: (new engram, layer-L states as the model saw them [T, H]) per row."""
    layer = engines[0].config.layer
    if any(e.config.layer != layer for e in engines):
        raise ValueError("rows of one absorb pass must read the same layer")
    surprise = [e.writer.needs_surprise for e in engines]
    # Writers only weigh the turn's own tokens, so logits start where the earliest turn does: the
    # output layer (49k x H) is a fifth of a token's compute, and the slots and frame come first.
    start = max(0, min(p.content for p in placements) - 1)
    # Rows with one key run once (before any engram every reader lays a turn out as the plain chat,
    # so one session's first turn under every recipe is one row); the writers then differ.
    rows, inverse = distinct([row_key(e, p) for e, p in zip(engines, placements)])
    sur = [any(s for s, j in zip(surprise, inverse) if j == k) for k in range(len(rows))]
    states, logits = _absorb_forward([engines[i] for i in rows], [placements[i] for i in rows], start, sur)
    if len(rows) < len(placements):
        states = states[inverse]
        logits = logits[inverse] if logits is not None else None
    new = []
    for i, (e, p, eng) in enumerate(zip(engines, placements, engrams)):
        n = len(p.ids)
        sur_i = surprise_of(logits[i, :n - start], p.ids, start) if surprise[i] else None
        seen = e.seen_states(states[i, :n].float(), p)
        new.append((e.compress(Written(seen, p, sur_i, eng), p.ids), seen))
    return new


def _absorb_kind(engine: Engine, p: Placement) -> tuple:
    """Rows of one kind may share a pass: one layer, one head class (companion.prefix), and either no
    engram yet, an engram written at the layer (their lower halves can be shared whether or not they need the
    output layer) or the same need for surprise (those rows run whole, the others stop at the layer)."""
    if p.vectors is None:  # no engram yet: the plain chat, the same row under every recipe (_absorb_pass)
        return engine.config.layer, head_class(p), "first"
    at_layer = engine.reader.depth_is_layer and 0 < engine.config.layer < engine.model.config.num_hidden_layers
    return engine.config.layer, head_class(p), "layer" if at_layer else engine.writer.needs_surprise


def absorb_rows(engines: list[Engine], engrams: list, turns: list[tuple[str, str]]) -> list[tuple]:
    """Engine.absorb for rows of several engines: (new engram, the turn's layer-L states [T, H]) per row.

    Rows are grouped by kind (_absorb_kind) and, within a kind, into passes of similar length."""
    engines = _engines(engines, len(turns))
    placements = [_turn_placement(e, eng, t) for e, eng, t in zip(engines, engrams, turns)]
    out: list = [None] * len(turns)
    kinds: dict[tuple, list[int]] = {}
    for i, (e, p) in enumerate(zip(engines, placements)):
        kinds.setdefault(_absorb_kind(e, p), []).append(i)
    for idx in kinds.values():
        lengths = [len(placements[i].ids) for i in idx]
        surprise = any(engines[i].writer.needs_surprise for i in idx)
        budget = MAX_SURPRISE_TOKENS if surprise else MAX_PASS_TOKENS
        keys = [(turns[i], _slots(engrams[i])) for i in idx]
        for group in rows_by_length(lengths, per_pass=PASS_TOKENS, budget=budget, keys=keys):
            rows = [idx[g] for g in group]
            for i, got in zip(rows, _absorb_pass([engines[i] for i in rows], [placements[i] for i in rows],
                                                 [engrams[i] for i in rows])):
                out[i] = got
    return out


def _slots(engram) -> int:
    return 0 if engram is None else engram.shape[0]


@dataclass
class Answered:
    reply: str
    prompt_tokens: int  # what the model was fed: the reader's layout of engram and text
    seconds: float  # the pass's wall time shared evenly by its rows
    target_nll: tuple[float, int] | None = None  # (sum of -log p, tokens) of the given target, if any


@torch.inference_mode()
def _answer_pass(engines: list[Engine], placements: list[Placement], targets: list, max_new_tokens: int):
    """Greedy replies of left-padded placements; with targets, their teacher-forced NLL first."""
    started = time.perf_counter()
    model, tok = engines[0].model, engines[0].tokenizer
    # Every row's next token at one column: rows are padded on the left, behind the head they share
    # (companion.prefix), which runs once.
    head = common_head(placements)
    embeds, mask, offsets, head_embeds = _padded_behind(engines, placements, left=True, head=head)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, head:]
    head_cache = run_head(model, head_embeds)[0] if head else None

    def cache(rows: int):
        return cache_for(head_cache, rows) if head else None

    stop = {end_id(tok)} | ({tok.eos_token_id} - {None})
    shared = _sharing(engines, placements)
    with _writing(engines, placements, offsets):
        if shared is None:
            out = forward_keeping(model, 1, inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                  use_cache=True, **{engines[0]._cache_arg: cache(len(placements))})
        else:  # blocks 1..depth once per distinct prompt, their keys and values copied to its rows
            depth, rows, inverse = shared
            below = cache(len(rows)) if head else fresh_cache(model)
            hidden = lower(model, embeds[rows], mask[rows], depth, positions=positions[rows], cache=below)
            out = upper(model, hidden[inverse], mask, depth, positions=positions, use_cache=True, keep=1,
                        cache=cache(len(placements)))
            with_lower(_cache_of(out), below, inverse, depth)
    cache, logits = _cache_of(out), out.logits[:, -1]
    nlls = (_target_nlls(engines[0], cache, logits, mask, positions, targets) if any(targets)
            else [None] * len(targets))
    done = torch.zeros(len(placements), dtype=torch.bool, device=embeds.device)
    replies: list[list[int]] = [[] for _ in placements]
    for _ in range(max_new_tokens):
        nxt = logits.argmax(dim=-1)
        for i, t in enumerate(nxt.tolist()):
            if not done[i]:
                if t in stop:
                    done[i] = True
                else:
                    replies[i].append(t)
        if bool(done.all()) or len(max(replies, key=len)) >= max_new_tokens:
            break
        mask = torch.cat([mask, mask.new_ones((len(placements), 1))], dim=1)
        positions = positions[:, -1:] + 1
        out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=positions, use_cache=True,
                    **{engines[0]._cache_arg: cache})
        cache, logits = _cache_of(out), out.logits[:, -1]
    share = round((time.perf_counter() - started) / len(placements), 3)
    return [Answered(tok.decode(r, skip_special_tokens=True), len(p.ids), share, n)
            for r, p, n in zip(replies, placements, nlls)]


def _target_nlls(engine: Engine, cache, logits, mask, positions, targets: list) -> list:
    """(sum -log p, n) of each row's target after its prompt: the prompt's last logits score the first
    token, one step over all targets (right-padded) the rest; the cache is cropped back after."""
    width = max(len(t) for t in targets if t)
    ids = torch.tensor([(t or []) + [0] * (width - len(t or [])) for t in targets], device=mask.device)
    out = engine.model(input_ids=ids, attention_mask=torch.cat([mask, mask.new_ones(ids.shape)], dim=1),
                       position_ids=positions[:, -1:] + 1 + torch.arange(width, device=mask.device),
                       use_cache=True, **{engine._cache_arg: cache})
    cache.crop(-width)
    lp = torch.log_softmax(torch.cat([logits[:, None], out.logits[:, :-1]], dim=1).float(), dim=-1)
    return [None if not t else (float(-lp[i, torch.arange(len(t)), torch.tensor(t)].sum()), len(t))
            for i, t in enumerate(targets)]


def answer_many(engine: Engine, engrams: list, texts: list[str], *, max_new_tokens: int = 24) -> list[str]:
    """Greedy replies for many (engram, user text) rows at once; memory is not updated."""
    engines = _engines(engine, len(texts))
    for e, eng, t in zip(engines, engrams, texts):
        e.check_fits(eng, chat_ids(e.tokenizer, t), max_new_tokens)
    placements = [e.place(eng, t) for e, eng, t in zip(engines, engrams, texts)]
    return [a.reply for a in _answer_pass(engines, placements, [None] * len(texts), max_new_tokens)]


def answer_rows(engines: list[Engine], engrams: list, texts: list[str], *, max_new_tokens: int = 24,
                targets: list | None = None) -> list[Answered]:
    """answer_many for rows of several engines, in passes of similar prompt length. targets: per row
    the token ids whose teacher-forced NLL to measure after the prompt (None: none); the caller
    checks they fit the context window beside the prompt."""
    engines = _engines(engines, len(texts))
    targets = targets or [None] * len(texts)
    for e, eng, t, tgt in zip(engines, engrams, texts, targets):
        e.check_fits(eng, chat_ids(e.tokenizer, t), max(max_new_tokens, len(tgt or [])))
    placements = [e.place(eng, t) for e, eng, t in zip(engines, engrams, texts)]
    out: list = [None] * len(texts)
    firsts, inverse = distinct([(row_key(e, p), tuple(t or ())) for e, p, t in zip(engines, placements, targets)])
    classes: dict = {}  # rows that can share a head (companion.prefix) share passes
    for i in firsts:
        classes.setdefault(head_class(placements[i]), []).append(i)
    for idx in classes.values():
        for group in rows_by_length([placements[i].prompt_len for i in idx],
                                    per_pass=max_new_tokens * DECODE_STEP_TOKENS,
                                    keys=[tuple(placements[i].ids) for i in idx]):
            rows = [idx[g] for g in group]
            got = _answer_pass([engines[i] for i in rows], [placements[i] for i in rows],
                               [targets[i] for i in rows], max_new_tokens)
            for i, a in zip(rows, got):
                out[i] = a
    for i, j in enumerate(inverse):  # a repeated row: its first's reply, asked no second time
        if out[i] is None:
            out[i] = replace(out[firsts[j]], seconds=0.0)
    return out
