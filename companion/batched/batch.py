"""Many sessions in one forward pass: the harnesses' throughput path, the asking half.

Each row of a batch is an independent session (its own engram and text), so
results equal the one-at-a-time Engine methods to floating-point tolerance.
Rows may come from different engines (recipes) over one model: each row is
laid out and embedded by its own engine, and a reader that writes at a layer
gets its rows written there, so recipes of any depth share a pass.

    answer_many: left-padded greedy generation, no memory update -> one reply per row
    answer_rows: answer_many for rows of several engines, in passes of similar
        length (rows.rows_by_length); also scores a given answer teacher-forced
        from the prompt's KV cache
    (the lived turns' half is companion.batched.absorb.absorb_rows; what both share, companion.batched.rows)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

from companion.engine.cycle import Engine, _cache_of, chat_ids, end_id
from companion.engine.halves import distinct, fresh_cache, lower, upper, with_lower
from companion.engine.recipes.base import Placement

from .prefix import cache_for, common_head, head_class, run_head
from .rows import (DECODE_STEP_TOKENS, engines_of, forward_keeping, padded_behind, row_key, rows_by_length, sharing,
                   writing)


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
    # (companion.batched.prefix), which runs once.
    head = common_head(placements)
    embeds, mask, offsets, head_embeds = padded_behind(engines, placements, left=True, head=head)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, head:]
    head_cache = run_head(model, head_embeds)[0] if head else None

    def cache(rows: int):
        return cache_for(head_cache, rows) if head else None

    stop = {end_id(tok)} | ({tok.eos_token_id} - {None})
    shared = sharing(engines, placements)
    with writing(engines, placements, offsets):
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
    engines = engines_of(engine, len(texts))
    for e, eng, t in zip(engines, engrams, texts):
        e.check_fits(eng, chat_ids(e.tokenizer, t), max_new_tokens)
    placements = [e.place(eng, t) for e, eng, t in zip(engines, engrams, texts)]
    return [a.reply for a in _answer_pass(engines, placements, [None] * len(texts), max_new_tokens)]


def answer_rows(engines: list[Engine], engrams: list, texts: list[str], *, max_new_tokens: int = 24,
                targets: list | None = None) -> list[Answered]:
    """answer_many for rows of several engines, in passes of similar prompt length. targets: per row
    the token ids whose teacher-forced NLL to measure after the prompt (None: none); the caller
    checks they fit the context window beside the prompt."""
    engines = engines_of(engines, len(texts))
    targets = targets or [None] * len(texts)
    for e, eng, t, tgt in zip(engines, engrams, texts, targets):
        e.check_fits(eng, chat_ids(e.tokenizer, t), max(max_new_tokens, len(tgt or [])))
    placements = [e.place(eng, t) for e, eng, t in zip(engines, engrams, texts)]
    out: list = [None] * len(texts)
    firsts, inverse = distinct([(row_key(e, p), tuple(t or ())) for e, p, t in zip(engines, placements, targets)])
    classes: dict = {}  # rows that can share a head (companion.batched.prefix) share passes
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
