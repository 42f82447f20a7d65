"""Many sessions in one forward pass: the harnesses' throughput path.

Each row of a batch is an independent session (its own engram and text), so
results equal the one-at-a-time Engine methods to floating-point tolerance.

    absorb_many: right-padded, one pass stopped after block L -> one engram per row
    answer_many: left-padded greedy generation, no memory update -> one reply per row
"""

from __future__ import annotations

import torch

from .cycle import Engine, _cache_of, chat_ids, end_id


def _rows(engine: Engine, engrams, id_lists) -> list[torch.Tensor]:
    rows = []
    for eng, ids in zip(engrams, id_lists):
        prefix = engine.prepare(eng)
        emb = engine.embed(ids)[0]
        rows.append(emb if prefix is None else torch.cat([prefix.to(emb.dtype), emb], dim=0))
    return rows


@torch.inference_mode()
def absorb_many(engine: Engine, engrams: list, turns: list[tuple[str, str]]) -> list[torch.Tensor]:
    """Engine.absorb for many sessions at once: returns the new engram of each row."""
    tok = engine.tokenizer
    id_lists = [chat_ids(tok, u, r) + [end_id(tok)] for u, r in turns]
    for eng, ids in zip(engrams, id_lists):
        engine.check_fits(eng, ids, 0)
    rows = _rows(engine, engrams, id_lists)
    lengths = [r.shape[0] for r in rows]
    width = max(lengths)
    embeds = rows[0].new_zeros((len(rows), width, rows[0].shape[-1]))
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=embeds.device)
    for i, r in enumerate(rows):  # right padding: positions stay 0..n-1, pads come after
        embeds[i, : r.shape[0]] = r
        mask[i, : r.shape[0]] = 1
    states = engine.layer_states(embeds, mask)
    return [engine.compress(states[i, :n]) for i, n in enumerate(lengths)]


@torch.inference_mode()
def answer_many(engine: Engine, engrams: list, texts: list[str], *, max_new_tokens: int = 24) -> list[str]:
    """Greedy replies for many (engram, user text) rows at once; memory is not updated."""
    tok = engine.tokenizer
    id_lists = [chat_ids(tok, t) for t in texts]
    for eng, ids in zip(engrams, id_lists):
        engine.check_fits(eng, ids, max_new_tokens)
    rows = _rows(engine, engrams, id_lists)
    width = max(r.shape[0] for r in rows)
    embeds = rows[0].new_zeros((len(rows), width, rows[0].shape[-1]))
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=embeds.device)
    for i, r in enumerate(rows):  # left padding, so every row's next token is at the same column
        embeds[i, width - r.shape[0]:] = r
        mask[i, width - r.shape[0]:] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    stop = {end_id(tok)} | ({tok.eos_token_id} - {None})
    out = engine.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True)
    cache, logits = _cache_of(out), out.logits[:, -1]
    done = torch.zeros(len(rows), dtype=torch.bool, device=embeds.device)
    replies: list[list[int]] = [[] for _ in rows]
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
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
        positions = positions[:, -1:] + 1
        out = engine.model(input_ids=nxt[:, None], attention_mask=mask, position_ids=positions, use_cache=True,
                           **{engine._cache_arg: cache})
        cache, logits = _cache_of(out), out.logits[:, -1]
    return [tok.decode(r, skip_special_tokens=True) for r in replies]
