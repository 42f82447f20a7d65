"""One batch of LoCoMo questions through one mode row: replies, F1, and the gold answer's NLL.

The mode builds each prompt (engram and context) exactly as modes.ask does;
batch.answer_many answers a batch of such prompts greedily in one forward
(equal to modes.ask per row to float tolerance; RunSettings.batch=1 calls
modes.ask itself), and questions of one conversation that share a long
context compute it once (prefix.answer_shared). The NLL of the gold answer
(str(answer)) after the very same prompt is measured the same three ways
(harness.nll: nll_one, nll_many, nll_shared). Category 5 (adversarial) has no
gold answer in the `answer` field, so its NLL is None.
"""

from __future__ import annotations

import time

from companion.engine.cycle import chat_ids

from ..harness.nll import nll_many, nll_one, nll_shared
from ..modes import ask, with_context
from .data import split_of
from .f1 import declines, locomo_f1
from .prefix import answer_shared

SHARED_CONTEXT_MODES = ("transcript", "recent")  # context independent of the question
NO_NLL = {"nll": None, "nll_tokens": 0}


def _nlls(engine, prompts, texts: list[str], items, *, shared: bool, batch: int) -> list[dict]:
    """The gold answer's NLL per item (None for category 5 and answerless items)."""
    want = [i for i, (_c, q) in enumerate(items) if q.category != 5 and q.answer]
    out = [dict(NO_NLL) for _ in items]
    if not want:
        return out
    engrams = [prompts[i].engram for i in want]
    sub, golds = [texts[i] for i in want], [str(items[i][1].answer) for i in want]
    if shared:
        got = nll_shared(engine, sub, golds)
    elif batch > 1:
        got = nll_many(engine, engrams, sub, golds)
    else:
        got = [nll_one(engine, e, t, a) for e, t, a in zip(engrams, sub, golds)]
    for i, g in zip(want, got):
        out[i] = g
    return out


def answer_group(engine, mode, row, items, memories, foreign, settings, full_tokens: dict) -> list[dict]:
    """Ask a batch of (conversation, question) through one mode row: batch.answer_many, or modes.ask one
    at a time when settings.batch is 1. Seconds are the replies' wall time shared equally (the NLL's
    forward is not counted). memories / foreign: conv_id -> Memory of the row's recipe."""
    from companion.batched.batch import answer_many

    t0 = time.perf_counter()
    prompts = [mode.prompt(memories[c.conv_id], q.question, foreign[c.conv_id]) for c, q in items]
    texts = [with_context(p.context, q.question) for p, (c, q) in zip(prompts, items)]
    shared = bool(settings.batch > 1 and len({c.conv_id for c, _ in items}) == 1 and prompts[0].context
                  and all(p.context == prompts[0].context and p.engram is None for p in prompts))
    if shared:  # one conversation, one context for every question: compute the prefix once
        replies = answer_shared(engine, None, texts, max_new_tokens=settings.max_new_tokens)
        tokens = [len(chat_ids(engine.tokenizer, t)) for t in texts]
    elif settings.batch > 1:
        replies = answer_many(engine, [p.engram for p in prompts], texts, max_new_tokens=settings.max_new_tokens)
        tokens = [len(engine.place(p.engram, t).ids) for p, t in zip(prompts, texts)]
    else:
        results = [ask(engine, mode, memories[c.conv_id], q.question, foreign=foreign[c.conv_id],
                       max_new_tokens=settings.max_new_tokens) for c, q in items]
        replies, tokens = [r.reply for r in results], [r.prompt_tokens for r in results]
    seconds = (time.perf_counter() - t0) / len(items)
    nlls = _nlls(engine, prompts, texts, items, shared=shared, batch=settings.batch)
    out = []
    for (conv, qa), reply, n, nll in zip(items, replies, tokens, nlls):
        full = full_tokens[conv.conv_id]
        out.append({"conv": conv.conv_id, "split": split_of(conv.conv_id), "qa_index": qa.index,
                    "category": qa.category, "question": qa.question, "answer": qa.answer,
                    "adversarial_answer": qa.adversarial_answer, "mode": row.name, "kind": row.kind,
                    "recipe": row.recipe, "reply": reply,
                    "f1": None if qa.category == 5 else round(locomo_f1(reply, qa.answer or "", qa.category), 4),
                    "declined": declines(reply), "prompt_tokens": n, "seconds": round(seconds, 3),
                    "transcript_tokens": full, "token_ratio": round(n / full, 5), **nll})
    return out
