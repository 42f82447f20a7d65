"""A decoder run in two halves, so rows that differ only above a depth share the lower one.

A reader that writes the engram into the residual stream entering block L+1
(hidden_states[L]) leaves blocks 1..L blind to it: they see placeholders. So
rows with the same token ids, laid out the same way, have the same lower half
whatever their engrams: one session's turn under ten layer-L recipes, or an
engram row and its foreign-engram control asking one question. The harnesses
run that half once per distinct prompt and only blocks L+1.. per row.

    lower(model, embeds, mask, depth)       [B, W, H] -> hidden_states[depth] [B, W, H]
    upper(model, hidden, mask, depth)       hidden_states[depth] -> the model's output
    splits(model, depth)                    whether lower+upper equals one pass on this model
    whole_passes()                          context: no splitting (the benchmark's baseline)
    with_lower(cache, lower_cache, rows, depth)  an upper pass's cache given the lower blocks' keys and values
    distinct(keys)                          ([first row of each key], [row -> its key's index])

    >>> distinct(["a", "b", "a", "c", "b"])
    ([0, 1, 3], [0, 1, 0, 2, 1])

Both halves are the model's own blocks, called through its own forward: the
lower half ends with a hook at block L, the upper one runs with the decoder's
block list cut to L+1.. for the length of the call. `splits` checks the two
against one ordinary pass on a probe, once per model and depth, and callers
fall back to whole passes where it fails (a decoder that does more than loop
over its blocks between the embeddings and the final norm).
"""

from __future__ import annotations

import inspect
import weakref
from contextlib import contextmanager

import torch


class _Stop(Exception):
    """Raised by a forward hook to end a pass once the wanted block has run."""


def _cache_kw(module: torch.nn.Module, cache) -> dict:
    """The forward's cache argument (`cache` in transformers 5, `past_key_values` before)."""
    if cache is None:
        return {}
    params = inspect.signature(module.forward).parameters
    return {"cache" if "cache" in params else "past_key_values": cache}


def _blocks(model) -> torch.nn.ModuleList | None:
    return getattr(model.get_decoder(), "layers", None)


def lower(model, embeds: torch.Tensor, mask: torch.Tensor, depth: int, *, positions: torch.Tensor | None = None,
          cache=None) -> torch.Tensor:
    """[B, W, H] input embeddings -> [B, W, H] states after block `depth` (hidden_states[depth]);
    with a cache, blocks 1..depth leave their keys and values in it."""
    decoder = model.get_decoder()
    caught: list[torch.Tensor] = []

    def hook(_module, _args, output):
        caught.append(output[0] if isinstance(output, tuple) else output)
        raise _Stop

    handle = decoder.layers[depth - 1].register_forward_hook(hook)
    try:
        decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=cache is not None,
                **_cache_kw(decoder, cache))
    except _Stop:
        pass
    finally:
        handle.remove()
    return caught[0]


@contextmanager
def _from_block(model, depth: int):
    decoder = model.get_decoder()
    blocks = decoder.layers
    decoder.layers = torch.nn.ModuleList(list(blocks)[depth:])
    try:
        yield
    finally:
        decoder.layers = blocks


def upper(model, hidden: torch.Tensor, mask: torch.Tensor, depth: int, *, positions: torch.Tensor | None = None,
          use_cache: bool = False, keep: int | None = None, cache=None):
    """The model's output (logits, cache) with blocks depth+1.. run on hidden_states[depth] [B, W, H].
    A cache it returns holds only those blocks' new keys and values (see with_lower); a given cache
    (a shared head's, companion.batched.prefix) is what every block's attention sees before them."""
    kw = {"logits_to_keep": keep} if keep else {}
    with _from_block(model, depth):
        return model(inputs_embeds=hidden, attention_mask=mask, position_ids=positions,
                     use_cache=use_cache or cache is not None, **kw, **_cache_kw(model, cache))


def fresh_cache(model):
    """An empty KV cache laid out for the model's blocks (for `lower` to fill)."""
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def with_lower(cache, lower_cache, rows: list[int], depth: int):
    """Set `cache`'s blocks 1..depth to `lower_cache`'s keys and values, row i taken from rows[i]
    (whatever those blocks held, e.g. a shared head that lower_cache holds too, is replaced)."""
    index = torch.tensor(rows)
    for i in range(depth):
        src, dst = lower_cache.layers[i], cache.layers[i]
        dst.crop(-dst.get_seq_length())
        dst.update(src.keys[index.to(src.keys.device)], src.values[index.to(src.values.device)])
    return cache


def distinct(keys: list) -> tuple[list[int], list[int]]:
    """The first row of each distinct key, and for every row the index of its key among them."""
    index: dict = {}
    rows, inverse = [], []
    for i, k in enumerate(keys):
        if k not in index:
            index[k] = len(rows)
            rows.append(i)
        inverse.append(index[k])
    return rows, inverse


_OFF = [False]


@contextmanager
def whole_passes():
    """Within it, `splits` says no: every pass runs whole (the benchmark's baseline)."""
    _OFF.append(True)
    try:
        yield
    finally:
        _OFF.pop()


_PROBED: "weakref.WeakKeyDictionary[torch.nn.Module, dict[int, bool]]" = weakref.WeakKeyDictionary()


@torch.inference_mode()
def splits(model, depth: int) -> bool:
    """True if lower then upper gives this model's ordinary output (checked once per model and depth)."""
    if _OFF[-1]:
        return False
    known = _PROBED.setdefault(model, {})
    if depth not in known:
        known[depth] = _probe(model, depth)
    return known[depth]


def _probe(model, depth: int) -> bool:
    blocks = _blocks(model)
    if blocks is None or not 0 < depth < len(blocks):
        return False
    embed = model.get_input_embeddings()
    ids = torch.arange(3, 3 + 2 * 7, device=embed.weight.device).reshape(2, 7)
    embeds = embed(ids)
    mask = torch.ones(ids.shape, dtype=torch.long, device=ids.device)
    mask[1, 5:] = 0  # a padded row, as the batches have
    try:
        whole = model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits
        split = upper(model, lower(model, embeds, mask, depth), mask, depth).logits
    except Exception:  # a decoder this cannot drive: whole passes only
        return False
    scale = whole[mask.bool()].abs().max().clamp(min=1.0)
    return bool(((whole - split)[mask.bool()].abs().max() / scale) < 1e-4)
