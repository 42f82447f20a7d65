"""A trained map on select-sticky's token states: each kept whole, nudged by a learned correction.

The anchored writer (trained.py) mixed several states into a slot and blurred
exact token identity: its engram gave near answers ("Zykynn" for "Zyplyn").
Here every slot stays one token's own state, chosen exactly as select-sticky
chooses; training learns only a low-rank correction added to a state when it
enters the engram,

    slot = x + (layer_norm(x) A) B        A: [H, r], B: [r, H]

so what the reader writes at layer L can move towards what blocks L+1.. read
best, one token at a time, without mixing tokens. B starts at zero: the
untrained writer is select-sticky. Old slots are carried as stored (mapped
once, when they entered). The language model never changes.

    >>> import torch
    >>> p = init_map(hidden=4, rank=2, seed=0)
    >>> x = torch.randn(3, 4)
    >>> bool(torch.equal(nudge(x, p), x))  # B = 0: the identity
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from .trained import Anchored, Weights
from .writers import Select

MAP_PARAMS = ("a", "b")
RANK = 64
MAPPED_WEIGHTS = Weights(
    Path(__file__).parent / "weights" / "select-mapped.safetensors",
    # The shipped weights: scripts/train_engram.py --recipe select-mapped --steps 200 --seed 0 --threads 1
    # (command, loss curve and what they do in docs/HISTORY.md, "A trained map").
    "8323cea7fdfd7923fb5d388088b34bbf48e9b866cd2156a211dcfa47cdff0657",
    "COMPANION_MAPPED_WEIGHTS",
    MAP_PARAMS,
)

# The same map trained with quiet episodes as well (a prompt the engram was not told about, the
# model's own no-memory reply the target, and a penalty on opening it with the answer the engram
# holds: companion.training.episodes); pinned the same way. Made by
# scripts/train_engram.py --recipe select-mapped --steps 200 --seed 0 --threads 1 --quiet-share 0.5 --avoid-weight 3
# (the architecture is select-mapped's; docs/HISTORY.md, "A quiet map").
QUIET_WEIGHTS = Weights(
    Path(__file__).parent / "weights" / "select-quiet.safetensors",
    "582a4fb05aefb37b271ffac674469a0e3941fc6f265bafb01b3f339ec6220652",
    "COMPANION_QUIET_WEIGHTS",
    MAP_PARAMS,
)

# The same map, trained also on real conversations' next turns (the reply the person gave, after the
# conversation so far: the chat-harm measure's own task), as an average of two runs that differ only
# in how many such episodes they saw: 0.3 x (--next-share 0.25, loud: recalls, but intrudes) +
# 0.7 x (--next-share 0.4, quiet: forgets), each
# scripts/train_engram.py --recipe select-mapped --steps 200 --seed 0 --threads 1 --quiet-share 0.5 --avoid-weight 3 --next-share S
# then scripts/research/mix_weights.py N25 N40 --share 0.3 (docs/HISTORY.md, "A map that helps chat").
CHAT_WEIGHTS = Weights(
    Path(__file__).parent / "weights" / "select-chat.safetensors",
    "379931943eca7f196525703fd7b97dd3643ac388ef3e1572e892475715b246d4",
    "COMPANION_CHAT_WEIGHTS",
    MAP_PARAMS,
)


def init_map(hidden: int, rank: int = RANK, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random down-projection and a zero up-projection: the map starts as the identity."""
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(hidden, rank, generator=g) / hidden ** 0.5, "b": torch.zeros(rank, hidden)}


def nudge(states: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """[M, H] states -> [M, H] states + their learned correction (differentiable in params)."""
    x = states.float()
    return x + (F.layer_norm(x, x.shape[-1:]) @ params["a"]) @ params["b"]


@dataclass(frozen=True)
class Mapped(Anchored):
    """select-sticky's choice, each new state nudged by the trained map (see the module docstring)."""

    name: str = "mapped"
    prior: Select = field(default_factory=lambda: Select(decay=1.0, per_turn=2))
    param_names: ClassVar[tuple[str, ...]] = MAP_PARAMS

    def init_params(self, hidden: int, seed: int = 0) -> dict[str, torch.Tensor]:
        return init_map(hidden, seed=seed)

    def slots_of(self, cands: torch.Tensor, top: list[int], n_old: int, params: dict) -> torch.Tensor:
        rows = torch.cat([cands[:n_old].float(), nudge(cands[n_old:], params)])
        return rows[top]

    def entering(self, states: torch.Tensor, fixed: dict | None = None) -> torch.Tensor:
        return nudge(states, fixed)
