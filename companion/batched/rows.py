"""Rows of many sessions laid out for one forward pass: the pieces both batch paths share.

Each row is one session's placed prompt (companion.engine.recipes Placement) under its own engine
(recipe) over one loaded model. Rows are padded into one tensor (padded, padded_behind), the
engram vectors of readers that write at a layer are written there (writing), rows whose blocks
1..L see the same ids share that lower half (sharing, companion.engine.halves), identical rows are
recognised (row_key), and rows are grouped into passes of similar length (rows_by_length).
"""

from __future__ import annotations

import hashlib
from contextlib import ExitStack

import torch

from companion.engine.cycle import Engine
from companion.engine.halves import distinct, splits
from companion.engine.recipes.base import Placement

# Grouping costs in prompt-token units, measured for SmolLM2-135M on one CPU thread (prefill about
# 280 tokens/s, a decode step about 0.17 s at batch 6 and 0.43 s at batch 60): a reply call costs
# about 48 tokens' prefill per decode step whatever the batch, an absorb call one read of the weights.
# They only decide which rows share a pass; results do not depend on them.
DECODE_STEP_TOKENS = 48
PASS_TOKENS = 50
MAX_PASS_TOKENS = 16384  # padded tokens per pass: bounds activations and the KV cache
MAX_SURPRISE_TOKENS = 2048  # a surprise pass keeps [rows, width, vocab] float logits


def engines_of(engines, n: int) -> list[Engine]:
    """Each of n rows' engine (one Engine given: the same for every row); all over one loaded model."""
    engines = list(engines) if isinstance(engines, (list, tuple)) else [engines] * n
    if any(e.model is not engines[0].model for e in engines):
        raise ValueError("rows of one pass must share one loaded model")
    return engines


def padded(engines: list[Engine], placements: list[Placement], *, left: bool):
    """[B, W, H] embeddings, [B, W] mask and each row's offset (left padding shifts a row right)."""
    return padded_behind(engines, placements, left=left, head=0)[:3]


def padded_behind(engines: list[Engine], placements: list[Placement], *, left: bool, head: int):
    """padded for rows behind a head they share (run apart: companion.batched.prefix): [B, W, H] embeddings
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


def writing(engines: list[Engine], placements: list[Placement], offsets: list[int]) -> ExitStack:
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


def sharing(engines: list[Engine], placements: list[Placement]) -> tuple[int, list[int], list[int]] | None:
    """(depth, distinct rows, row -> its index) when rows share blocks 1..depth (companion.engine.halves):
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
    lower half, companion.engine.halves); the costs do not depend on them.

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
