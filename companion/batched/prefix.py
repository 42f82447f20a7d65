"""A prompt head that every row of a pass shares, run once.

Most rows of a harness pass open the same way: the chat template's system
turn, and under a framed reader "Earlier I told you:" before the engram's
slots. Attention is causal, so a position's keys, values and states depend
only on the tokens up to it: a head that every row shares and that ends
before any row's first slot is the same in every row. It runs once, its keys
and values are copied into each row's cache, and the rows run only what
follows it.

    common_head(placements, limit)   how many leading ids all rows share (0: too few to bother)
    common_prefix(id_lists)          the longest shared prefix of token id lists
    head_class(placement)            rows of one class can share a head (passes are grouped by it)
    run_head(model, embeds, layer)   [1, P, H] -> (its KV cache, hidden_states[layer] [1, P, H] or None)
    cache_for(head, rows)            a new cache holding the head's keys and values for `rows` rows
    without_heads()                  context: no head is shared (the benchmark's baseline)

    >>> from types import SimpleNamespace as P
    >>> common_head([P(ids=list(range(20)), slots=[12]), P(ids=list(range(15)) + [99], slots=[])])
    12
    >>> common_head([P(ids=[1, 2, 3], slots=[]), P(ids=[1, 2, 4], slots=[])])  # too short to be worth a pass
    0
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch

# Below this many shared tokens the extra call costs more than it saves.
MIN_HEAD = 8


def _plain(p) -> int:
    """How many of a row's leading ids are ordinary tokens (before its first slot)."""
    return p.slots[0] if p.slots else len(p.ids)


def common_head(placements, *, limit: int | None = None) -> int:
    """The number of leading ids every row has in common, before any row's first slot and leaving
    each row at least one id of its own (limit: at most this many); 0 when under MIN_HEAD."""
    if _OFF[-1]:
        return 0
    n = min(common_prefix([p.ids for p in placements]), min(_plain(p) for p in placements))
    if limit is not None:
        n = min(n, limit)
    return n if n >= MIN_HEAD else 0


def common_prefix(id_lists: list[list[int]]) -> int:
    """Length of the longest shared prefix, leaving every row at least one token of its own.

    >>> common_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]])
    2
    """
    n = min(len(ids) for ids in id_lists) - 1
    first = id_lists[0]
    for ids in id_lists[1:]:
        k = 0
        while k < n and ids[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


_OFF = [False]


@contextmanager
def without_heads():
    """Within it, `common_head` says 0: every row runs its head itself (the benchmark's baseline)."""
    _OFF.append(True)
    try:
        yield
    finally:
        _OFF.pop()


def head_class(p):
    """Rows with the same class open with the same MIN_HEAD ordinary tokens; None: a row that cannot
    share a head (its engram comes first, as the prefix reader puts it)."""
    return tuple(p.ids[:MIN_HEAD]) if _plain(p) > MIN_HEAD else None


@torch.inference_mode()
def run_head(model, embeds: torch.Tensor, layer: int | None = None):
    """One row's head [1, P, H] through the decoder: (its KV cache, hidden_states[layer] [1, P, H] or None).
    The output layer is skipped: no row asks for logits inside the head."""
    decoder = model.get_decoder()
    out = decoder(inputs_embeds=embeds, use_cache=True, output_hidden_states=layer is not None)
    cache = getattr(out, "cache", None)
    if cache is None:  # transformers before 5
        cache = out.past_key_values
    return cache, (out.hidden_states[layer] if layer is not None else None)


def cache_for(head, rows: int):
    """A fresh cache holding `head`'s keys and values (one row) for each of `rows` rows; the
    head's own cache is left as it is, so one head serves several passes."""
    cache = copy.deepcopy(head)
    cache.batch_repeat_interleave(rows)
    return cache
