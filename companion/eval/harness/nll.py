"""The smooth measure: teacher-forced NLL of the correct answer under a mode's exact prompt.

A reply is right or wrong; the answer's negative log-likelihood moves before
the reply flips, so small differences between recipes show up at a few trials.
The prompt is exactly the one the mode's question is asked with: the engram
placed by the recipe's reader and the user text `modes.with_context(context,
question)`; the answer's tokens follow the assistant header.

    nll_one(engine, engram, text, answer)      Engine.answer_nll -> {"nll": mean nats per token, "nll_tokens": n}
    nll_many(engine, engrams, texts, answers)  the same for many rows in one left-padded forward
    nll_shared(engine, texts, answers)         rows without an engram sharing a long text prefix: its KV once
    scored_target / nll_record                 for callers scoring answers inside their own pass
                                               (batch.answer_rows' targets)
    mean_ci(xs)                                {"mean", "sd", "n", "low", "high"}: mean ± 1.96 sd / sqrt(n)

"nll" is None (with "nll_error") when the answer has no tokens or the prompt
and the answer do not fit the context window.
"""

from __future__ import annotations

import math

import torch

from companion.batched.rows import forward_keeping, padded, writing
from companion.engine.cycle import InputTooLongError, _cache_of, chat_ids
from companion.engine.recipes.base import Placement

Z95 = 1.959964


def _target(engine, answer: str) -> list[int]:
    return engine.tokenizer(answer, add_special_tokens=False)["input_ids"]


def _refused(engine, engram, text: str, target: list[int]) -> dict | None:
    """The record of a row that cannot be measured, or None when it can."""
    if not target:
        return {"nll": None, "nll_tokens": 0, "nll_error": "the answer has no tokens"}
    try:
        engine.check_fits(engram, chat_ids(engine.tokenizer, text), len(target))
    except InputTooLongError as exc:
        return {"nll": None, "nll_tokens": len(target), "nll_error": str(exc)}
    return None


def _record(total: float, n: int) -> dict:
    return {"nll": round(total / n, 5), "nll_tokens": n}


def scored_target(engine, engram, text: str, answer: str) -> tuple[list[int] | None, dict | None]:
    """The answer's tokens to score after this prompt, or (None, the record of why it cannot be)."""
    target = _target(engine, answer)
    refused = _refused(engine, engram, text, target)
    return (None, refused) if refused is not None else (target, None)


def nll_record(total: float, n: int) -> dict:
    """The record of a measured NLL: (sum over tokens, token count) -> {"nll": mean, "nll_tokens": n}."""
    return _record(total, n)


def nll_one(engine, engram, text: str, answer: str) -> dict:
    """Engine.answer_nll of one prompt, as a per-token mean."""
    refused = _refused(engine, engram, text, _target(engine, answer))
    if refused is not None:
        return refused
    total, n = engine.answer_nll(engram, text, answer)
    return _record(total, n)


@torch.inference_mode()
def nll_many(engine, engrams: list, texts: list[str], answers: list[str]) -> list[dict]:
    """nll_one for many rows in one forward (equal to it per row to float tolerance)."""
    out: list[dict | None] = [None] * len(texts)
    rows = []  # (index, placement of prompt + answer, answer length)
    for i, (engram, text, answer) in enumerate(zip(engrams, texts, answers)):
        target = _target(engine, answer)
        out[i] = _refused(engine, engram, text, target)
        if out[i] is None:
            p = engine.place(engram, text)
            rows.append((i, Placement(p.ids + target, p.slots, p.vectors, p.depth, p.content), len(target)))
    if rows:
        placements = [p for _, p, _ in rows]
        # Left padding ends every row at the last column, so the answers' logits are the last few columns.
        engines = [engine] * len(placements)
        embeds, mask, offsets = padded(engines, placements, left=True)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        keep = max(n for _, _, n in rows) + 1
        with writing(engines, placements, offsets):
            logits = forward_keeping(engine.model, keep, inputs_embeds=embeds, attention_mask=mask,
                                     position_ids=positions, use_cache=False).logits
        for j, (i, p, n) in enumerate(rows):
            lp = torch.log_softmax(logits[j, -n - 1:-1].float(), dim=-1)
            tgt = torch.tensor(p.ids[-n:], device=lp.device)[:, None]
            out[i] = _record(float(-lp.gather(1, tgt).sum()), n)
    return out  # type: ignore[return-value]


@torch.inference_mode()
def nll_shared(engine, texts: list[str], answers: list[str]) -> list[dict]:
    """nll_one (no engram) for texts sharing a long prefix: the prefix's KV cache is built once and
    cropped back after each row, as locomo.prefix.answer_shared does for replies."""
    from companion.batched.prefix import common_prefix

    out: list[dict | None] = [None] * len(texts)
    todo = []
    for i, (text, answer) in enumerate(zip(texts, answers)):
        target = _target(engine, answer)
        out[i] = _refused(engine, None, text, target)
        if out[i] is None:
            todo.append((i, chat_ids(engine.tokenizer, text), target))
    if not todo:
        return out  # type: ignore[return-value]
    p = common_prefix([ids for _, ids, _ in todo])
    if p == 0:
        return nll_many(engine, [None] * len(texts), texts, answers)
    first = todo[0][1]
    prefix = engine.model(input_ids=torch.tensor([first[:p]], device=engine.lm.device), use_cache=True)
    cache, base = _cache_of(prefix), p
    for i, ids, target in todo:
        step = ids[p:] + target
        res = engine._step(step, torch.ones((1, base + len(step)), dtype=torch.long, device=engine.lm.device),
                           cache, False)
        cache = _cache_of(res)
        n = len(target)
        lp = torch.log_softmax(res.logits[0, -n - 1:-1].float(), dim=-1)
        tgt = torch.tensor(target, device=lp.device)[:, None]
        out[i] = _record(float(-lp.gather(1, tgt).sum()), n)
        extra = cache.get_seq_length() - base
        if extra > 0:
            cache.crop(-extra)
    return out  # type: ignore[return-value]


def mean_ci(xs: list[float]) -> dict:
    """Mean, sample sd, n and the normal 95% interval mean ± 1.96 sd / sqrt(n) (None bounds below n=2)."""
    xs = [float(x) for x in xs if x is not None]
    n = len(xs)
    if n == 0:
        return {"mean": None, "sd": None, "n": 0, "low": None, "high": None}
    mean = sum(xs) / n
    if n < 2:
        return {"mean": mean, "sd": 0.0, "n": 1, "low": None, "high": None}
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = Z95 * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "n": n, "low": mean - half, "high": mean + half}
