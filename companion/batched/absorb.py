"""Lived turns of many sessions in shared forward passes: absorb_rows.

Engine.absorb for rows of one or several engines (recipes) over one model: each row's turn is
laid out by its engine's reader, run right-padded, and its layer-L states (and, for writers
that weigh surprise, the logits of the turn's own tokens) go to its engine's writer. Rows are
grouped by kind (_absorb_kind), share a head (companion.batched.prefix) and lower half
(companion.engine.halves) where they can, and identical rows run once (rows.row_key).
"""

from __future__ import annotations

import torch

from companion.engine.cycle import Engine, chat_ids, end_id, surprise_of
from companion.engine.halves import distinct, lower, upper
from companion.engine.recipes.base import Placement, Written

from .prefix import cache_for, common_head, head_class, run_head
from .rows import (MAX_PASS_TOKENS, MAX_SURPRISE_TOKENS, PASS_TOKENS, engines_of, forward_keeping, padded_behind,
                   row_key, rows_by_length, sharing, writing)


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
    shared = sharing(engines, placements) if needs_logits else None
    shares_lower = shared is not None and shared[0] == layer
    if needs_logits and not all(surprise) and not shares_lower:  # the rows that stop at the layer go apart
        return _absorb_apart(engines, placements, start, surprise)
    # A shared head stops short of the logits and, for a pass that stops at the layer, needs the
    # layer to be a block's output (hidden_states[L] of the last block has the final norm applied).
    runs_head = needs_logits or 0 < layer < model.config.num_hidden_layers
    head = common_head(placements, limit=start) if runs_head else 0
    embeds, mask, offsets, head_embeds = padded_behind(engines, placements, left=False, head=head)
    head_cache, head_states = run_head(model, head_embeds, layer) if head else (None, None)

    def cache(rows: int):
        return cache_for(head_cache, rows) if head else None

    keep = head + embeds.shape[1] - start
    if shares_lower:  # the turn's own states come from the shared half
        _, rows, inverse = shared
        states = lower(model, embeds[rows], mask[rows], layer, cache=cache(len(rows)))[inverse]
        up = [i for i, s in enumerate(surprise) if s]  # only these need blocks L+1.. and the output layer
        with writing([engines[i] for i in up], [placements[i] for i in up], [offsets[i] for i in up]):
            got = upper(model, states[up], mask[up], layer, keep=keep, cache=cache(len(up))).logits
        logits = got
        if len(up) < len(surprise):
            logits = got.new_zeros((len(surprise), *got.shape[1:]))
            logits[up] = got
    else:
        with writing(engines, placements, offsets):
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
    sur = [False] * len(rows)
    for s, j in zip(surprise, inverse):
        sur[j] = sur[j] or s
    states, logits = _absorb_forward([engines[i] for i in rows], [placements[i] for i in rows], start, sur)
    new = []
    for e, p, eng, s, j in zip(engines, placements, engrams, surprise, inverse):  # j: the row that ran for it
        n = len(p.ids)
        sur_i = surprise_of(logits[j, :n - start], p.ids, start) if s else None
        seen = e.seen_states(states[j, :n].float(), p)
        new.append((e.compress(Written(seen, p, sur_i, eng), p.ids), seen))
    return new


def _absorb_kind(engine: Engine, p: Placement) -> tuple:
    """Rows of one kind may share a pass: one layer, one head class (companion.batched.prefix), and either no
    engram yet, an engram written at the layer (their lower halves can be shared whether or not they need the
    output layer) or the same need for surprise (those rows run whole, the others stop at the layer)."""
    if p.vectors is None:  # no engram yet: the plain chat, the same row under every recipe (_absorb_pass)
        return engine.config.layer, head_class(p), "first"
    at_layer = engine.reader.depth_is_layer and 0 < engine.config.layer < engine.model.config.num_hidden_layers
    return engine.config.layer, head_class(p), "layer" if at_layer else engine.writer.needs_surprise


def absorb_rows(engines: list[Engine], engrams: list, turns: list[tuple[str, str]]) -> list[tuple]:
    """Engine.absorb for rows of several engines: (new engram, the turn's layer-L states [T, H]) per row.

    Rows are grouped by kind (_absorb_kind) and, within a kind, into passes of similar length."""
    engines = engines_of(engines, len(turns))
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
