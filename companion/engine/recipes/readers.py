"""Readers: where the engram's N vectors sit in the next prompt, and at what depth.

    PrefixReader  the seed's place: N positions in front of the chat template
    FramedReader  inside the user message, behind a short framing text:
                  "Earlier I told you: <N slots>\\nNow answer briefly: <user text>"

Either writes the vectors in place of the input embeddings (depth 0, scaled
to the embedding norm as the seed does, or per slot) or, with at_layer, into
the residual stream entering block L+1 where the states came from (no rescale).

Example (ids of a 2-slot framed prompt; 216 is the placeholder ' '):
    FramedReader().place(tok, v, "hi", None, layer=16).ids  ->
    [...template..., 'Earlier I told you:', 216, 216, '\\n', 'hi', ...]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import engram as E
from ..chat_format import chat_ids, content_start, template_around
from .base import Placement

PLACEHOLDER = " "  # its embedding is overwritten (depth 0) or only feeds blocks below the depth


def _placeholder_id(tokenizer) -> int:
    return tokenizer(PLACEHOLDER, add_special_tokens=False)["input_ids"][-1]


class _Depth:
    """What both readers share: at the input (scaled) or at layer L (as is)."""

    at_layer: bool
    scaling: str

    @property
    def depth_is_layer(self) -> bool:
        return self.at_layer

    def vectors(self, engram: torch.Tensor, embed_norm: float) -> torch.Tensor:
        return _scaled(engram, embed_norm, "none" if self.at_layer else self.scaling)


@dataclass(frozen=True)
class PrefixReader(_Depth):
    name: str = "prefix"
    at_layer: bool = False  # True: write at hidden_states[L] instead of the input embeddings
    scaling: str = "embedding-mean-norm"  # "embedding-mean-norm" | "per-slot" | "none" (depth 0 only)
    keep_first: bool = False  # the template's first token stays first, so the attention sink has a real home

    def place(self, tokenizer, vectors, user, reply, *, layer, system=None):
        n = 0 if vectors is None else vectors.shape[0]
        ids = chat_ids(tokenizer, user, reply, system=system)
        first = 1 if (self.keep_first and n) else 0
        start = n + content_start(tokenizer, system)
        return Placement(ids[:first] + [_placeholder_id(tokenizer)] * n + ids[first:], list(range(first, first + n)),
                         vectors, layer if self.at_layer else 0, start, start + _length(tokenizer, user))


@dataclass(frozen=True)
class FramedReader(_Depth):
    name: str = "framed"
    at_layer: bool = False
    scaling: str = "embedding-mean-norm"
    frame: str = "Earlier I told you:"
    # Between the slots and the new input: the text modes frame remembered text the same way
    # (modes.with_context), so engram and text rows differ only in what is remembered. The
    # prototype in shared/DESIGN.md fell from 10 to 5 of 12 without it; not measured here.
    lead: str = "\nNow answer briefly: "

    def place(self, tokenizer, vectors, user, reply, *, layer, system=None):
        if vectors is None or vectors.shape[0] == 0:  # no memory yet: the plain prompt, no frame
            start = content_start(tokenizer, system)
            return Placement(chat_ids(tokenizer, user, reply, system=system), content=start,
                             user_end=start + _length(tokenizer, user))
        n = vectors.shape[0]
        before, after = template_around(tokenizer, self.frame + " ", self.lead + user, reply, system=system)
        ids = before + [_placeholder_id(tokenizer)] * n + after
        slots = list(range(len(before), len(before) + n))
        # The turn's own text starts after the slots and the lead text that follows them.
        # A lead ending in a space merges it into the user's first word, so count the lead's
        # tokens as what it adds in front of the user's text.
        both = _length(tokenizer, self.lead + user)
        lead = max(0, both - _length(tokenizer, user))
        return Placement(ids, slots, vectors, layer if self.at_layer else 0, len(before) + n + lead,
                         len(before) + n + both)


def _length(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0


def _scaled(engram: torch.Tensor, embed_norm: float, scaling: str) -> torch.Tensor:
    if scaling == "embedding-mean-norm":
        return E.scale(engram, embed_norm)
    if scaling == "per-slot":
        norms = engram.float().norm(dim=-1, keepdim=True).clamp_min(1e-6)
        return engram * (embed_norm / norms)
    return engram
