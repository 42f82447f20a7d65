"""Which tokens hold an engram's slots: a diagnostic for token-keeping writers (select-*).

A select writer copies token states into its slots unchanged, so each slot can
be traced to the turn and token it came from by exact equality: with the turn's
own layer-L states (from the very pass that wrote the engram,
`absorb.absorb_rows`) when it entered, with an old slot when it stayed. Averaging writers (seed, ...) match nothing; their slots are
labelled None.

    >>> labels = trace_session(engine, [(fact, ack), *distractors])   # doctest: +SKIP
    >>> [lab.text for lab in labels[-1] if lab and lab.turn == 0]       # the fact's tokens still held
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from companion.batched.absorb import absorb_rows
from companion.engine.chat_format import end_id
from companion.engine.recipes.writers import state_part


@dataclass(frozen=True)
class Slot:
    turn: int  # index of the turn the state was written in
    text: str  # the token, decoded


def trace_session(engine, turns: list[tuple[str, str]]) -> list[list[Slot | None]]:
    """Live `turns` through the engram update (one pass a turn); after each, the origin of every slot of the new engram."""
    engram, labels, out = None, [], []
    cols = engine.writer.extra_columns
    for t, (user, reply) in enumerate(turns):
        ids = engine.place(engram, user, reply).ids + [end_id(engine.tokenizer)]
        (new, states), = absorb_rows([engine], [engram], [(user, reply)])
        old = state_part(engram, cols).float() if engram is not None else None
        now = []
        for v in state_part(new, cols).float():
            hit = next((labels[j] for j in range(old.shape[0]) if torch.equal(old[j], v)), None) \
                if old is not None else None
            if hit is None:
                same = torch.nonzero((states == v).all(dim=-1)).flatten().tolist()
                hit = Slot(t, engine.tokenizer.decode([ids[same[0]]])) if same else None
            now.append(hit)
        engram, labels = new, now
        out.append(now)
    return out
