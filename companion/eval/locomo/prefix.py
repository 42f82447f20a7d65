"""Answering many questions that share a long prompt prefix, computing the prefix once.

In the text modes whose context does not depend on the question (transcript,
recent), every question of a conversation starts with the same tokens: the
chat header and the remembered text. Their KV cache is built once and cropped
back after each question, so each question costs only its own tokens and its
reply. Causal attention makes this the same computation as the full prompt
(equal to Engine.run_turn's reply to float tolerance; tested).
"""

from __future__ import annotations

import torch

from companion.batched.prefix import common_prefix
from companion.engine import engram as E
from companion.engine.cycle import _cache_of, chat_ids, end_id


@torch.inference_mode()
def answer_shared(engine, engram, texts: list[str], *, max_new_tokens: int = 24) -> list[str]:
    """Greedy replies to texts that share `engram` and a long text prefix; memory is not updated."""
    tok = engine.tokenizer
    id_lists = [chat_ids(tok, t) for t in texts]
    for ids in id_lists:
        engine.check_fits(engram, ids, max_new_tokens)
    p = common_prefix(id_lists)
    embeds, mask = E.inject(engine.prepare(engram), engine.embed(id_lists[0][:p]))
    out = engine.model(inputs_embeds=embeds, attention_mask=mask, use_cache=True)
    cache, base = _cache_of(out), mask.shape[1]
    stop = {end_id(tok)} | ({tok.eos_token_id} - {None})
    replies = []
    for ids in id_lists:
        step = ids[p:]
        reply: list[int] = []
        length = base
        for _ in range(max_new_tokens + 1):
            length += len(step)
            out = engine._step(step, torch.ones((1, length), dtype=torch.long, device=mask.device), cache, False)
            cache = _cache_of(out)
            nxt = int(torch.argmax(out.logits[0, -1]))
            if nxt in stop or len(reply) == max_new_tokens:
                break
            reply.append(nxt)
            if len(reply) == max_new_tokens:
                break
            step = [nxt]
        extra = cache.get_seq_length() - base
        if extra > 0:
            cache.crop(-extra)  # transformers 5: a negative count drops that many tokens from the end
        replies.append(tok.decode(reply, skip_special_tokens=True))
    return replies
