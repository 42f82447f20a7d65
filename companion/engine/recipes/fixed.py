"""Fixed tensors a recipe derives from the model once, and the hash that pins them.

A session stores the hash (EngramConfig.fixed); if the tensors come out
different on resume (other weights, a changed builder), the engine refuses.
The hash is taken of the tensors rounded to bfloat16, so the last bits of a
different device's arithmetic do not count as a change.
"""

from __future__ import annotations

import hashlib

import torch

from ..chat_format import chat_ids, end_id

# Neutral chat, written for this purpose; no evaluation text (harness facts, LoCoMo) is in it.
MEAN_TEXT = [
    ("Good morning! How did you sleep?", "Pretty well, thanks. I had some coffee and read the news."),
    ("What should I cook for dinner tonight?", "Maybe a simple pasta with tomatoes, garlic and some basil."),
    ("I have been trying to run three times a week.", "That is a great habit. Start slow and keep it steady."),
    ("Can you recommend a good book for a long flight?", "A light mystery novel usually makes the hours go by."),
    ("My phone battery dies by the afternoon.", "Lowering the screen brightness and closing apps can help."),
    ("We are thinking about painting the living room.", "Soft neutral colours make a room feel calm and bright."),
]


def fixed_hash(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over name and rounded values of each fixed tensor; "" when there are none."""
    if not tensors:
        return ""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu", torch.bfloat16).contiguous()
        h.update(name.encode() + str(tuple(t.shape)).encode() + t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


@torch.inference_mode()
def mean_state(engine) -> torch.Tensor:
    """[H] mean layer-L state of MEAN_TEXT's tokens (sinks excluded), float32 CPU."""
    from .writers import sink_positions

    rows = []
    for user, reply in MEAN_TEXT:
        ids = chat_ids(engine.tokenizer, user, reply) + [end_id(engine.tokenizer)]
        embeds = engine.embed(ids)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        states = engine.layer_states(embeds, mask)[0].float()
        keep = sorted(set(range(states.shape[0])) - set(sink_positions(states)))
        rows.append(states[keep])
    return torch.cat(rows).mean(dim=0).cpu()
