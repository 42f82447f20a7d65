"""Many sessions in one forward pass: the harnesses' throughput path.

Each row of a batch is an independent session (its own engram and text), so
results equal the one-at-a-time Engine methods to floating-point tolerance.

    absorb_many: right-padded, one pass -> one engram per row
    answer_many: left-padded greedy generation, no memory update -> one reply per row
"""

from __future__ import annotations

import torch

from .cycle import Engine, _cache_of, chat_ids, end_id, surprise_of
from .recipes.base import Placement, Written


def _padded(engine: Engine, placements: list[Placement], *, left: bool):
    """[B, W, H] embeddings, [B, W] mask and each row's offset (left padding shifts a row right)."""
    rows = [engine.embeds_of(p)[0] for p in placements]
    width = max(r.shape[0] for r in rows)
    embeds = rows[0].new_zeros((len(rows), width, rows[0].shape[-1]))
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=embeds.device)
    offsets = []
    for i, r in enumerate(rows):
        off = width - r.shape[0] if left else 0
        embeds[i, off: off + r.shape[0]] = r
        mask[i, off: off + r.shape[0]] = 1
        offsets.append(off)
    return embeds, mask, offsets


def _writes(placements: list[Placement], offsets: list[int]):
    return [(i, [s + off for s in p.slots], p.vectors) for i, (p, off) in enumerate(zip(placements, offsets))
            if p.vectors is not None and p.slots]


@torch.inference_mode()
def absorb_many(engine: Engine, engrams: list, turns: list[tuple[str, str]]) -> list[torch.Tensor]:
    """Engine.absorb for many sessions at once: returns the new engram of each row."""
    tok = engine.tokenizer
    for eng, (u, r) in zip(engrams, turns):
        engine.check_fits(eng, chat_ids(tok, u, r) + [end_id(tok)], 0)
    placements = []
    for eng, (u, r) in zip(engrams, turns):
        p = engine.place(eng, u, r)
        placements.append(Placement(p.ids + [end_id(tok)], p.slots, p.vectors, p.depth, p.content))
    embeds, mask, offsets = _padded(engine, placements, left=False)  # right padding: positions stay 0..n-1
    with engine.writing(_writes(placements, offsets), engine.depth):
        if engine.writer.needs_surprise:
            out = engine.model(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True, use_cache=False)
            states, logits = out.hidden_states[engine.config.layer], out.logits
        else:
            states, logits = engine.layer_states(embeds, mask), None
    new = []
    for i, (p, eng) in enumerate(zip(placements, engrams)):
        n = len(p.ids)
        sur = surprise_of(logits[i, :n], p.ids) if logits is not None else None
        written = Written(engine.seen_states(states[i, :n].float(), p), p, sur, eng)
        new.append(engine.compress(written))
    return new


@torch.inference_mode()
def answer_many(engine: Engine, engrams: list, texts: list[str], *, max_new_tokens: int = 24) -> list[str]:
    """Greedy replies for many (engram, user text) rows at once; memory is not updated."""
    tok = engine.tokenizer
    for eng, t in zip(engrams, texts):
        engine.check_fits(eng, chat_ids(tok, t), max_new_tokens)
    placements = [engine.place(eng, t) for eng, t in zip(engrams, texts)]
    embeds, mask, offsets = _padded(engine, placements, left=True)  # every row's next token at one column
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    stop = {end_id(tok)} | ({tok.eos_token_id} - {None})
    with engine.writing(_writes(placements, offsets), engine.depth):
        out = engine.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True)
    cache, logits = _cache_of(out), out.logits[:, -1]
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
        out = engine.model(input_ids=nxt[:, None], attention_mask=mask, position_ids=positions, use_cache=True,
                           **{engine._cache_arg: cache})
        cache, logits = _cache_of(out), out.logits[:, -1]
    return [tok.decode(r, skip_special_tokens=True) for r in replies]
