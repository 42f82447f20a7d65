"""Learned retention: what enters the engram and what stays is decided by a learned value, not by age.

select-sticky keeps a state by the surprise it had when written and lets a full
engram give up at most 2 slots a turn. Both are fixed rules, and the measured
result is that a fact's slots are replaced by later surprising small talk within
10 to 20 turns, and a fact told into a full engram gets 2 of its tokens in. Here
a small scorer reads each candidate state (its layer-L state, its neighbours'
and its surprise) and gives it a value once, when it is written:

    x_i   = layer_norm(h_i)                               h: [m, H] the turn's user-text states
    f_i   = [x_i, (x_{i-1} + x_{i+1}) / 2, s_i / 10, s_{i-1} / 10]      s: surprise (nats)
    v_i   = w2 . gelu(f_i W1 + b1) + b2                   a logit: "a later question needs this"

A word's value is its tokens' largest, and words enter and leave whole. The N
kept are the most valuable words of old slots + the turn, old ones counted
`margin` higher so that equals do not churn; there is no per-turn cap, so a
statement worth more than what the engram holds comes in whole however full it
is, and there is no decay, so nothing is evicted for its age alone. Each state
that enters is nudged by select-chat's trained map, as there. The value is stored
as the slot's extra column. The scorer is trained with the model frozen on
labelled turns (companion.training.retention); the weights are pinned by sha256.

    >>> retain([3.0, 3.0, 1.0], [2.0, 2.0, 5.0], [0, 0, 1, 2, 2, 3], slots=3, margin=0.5)
    [0, 1, 5]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from .base import Written
from .mapped import MAP_PARAMS, init_map, nudge
from .trained import Weights
from .writers import Select, fill_whole, word_max

VALUE_PARAMS = ("v_w1", "v_b1", "v_w2", "v_b2")
VALUE_HIDDEN = 32
KEEP_WEIGHTS = Weights(
    Path(__file__).parent / "weights" / "select-keep.safetensors",
    # scripts/train_retention.py --seed 0 --threads 2 (loss curve: docs/RESULTS.md, "How the weights were made")
    "05cfdf0a9425f5b268c105cd79b740fbd03115085bc2b2197f6afc834d22dcc2",
    "COMPANION_KEEP_WEIGHTS",
    MAP_PARAMS + VALUE_PARAMS,
)


def features(states: torch.Tensor, surprise: torch.Tensor) -> torch.Tensor:
    """[m, H] states and [m] surprise -> [m, 2H+2] scorer inputs (see the module docstring)."""
    x = F.layer_norm(states.float(), states.shape[-1:])
    zero = x.new_zeros((1, x.shape[1]))
    around = (torch.cat([zero, x[:-1]]) + torch.cat([x[1:], zero])) / 2
    s = surprise.float().to(x.device) / 10
    s_prev = torch.cat([s.new_zeros(1), s[:-1]])
    return torch.cat([x, around, s[:, None], s_prev[:, None]], dim=1)


def value_scores(states: torch.Tensor, surprise: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """[m] value logits of m candidate states (differentiable in params)."""
    if states.shape[0] == 0:
        return states.new_zeros(0)
    h = F.gelu(features(states, surprise) @ params["v_w1"] + params["v_b1"])
    return h @ params["v_w2"] + params["v_b2"]


def init_value(hidden: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"v_w1": torch.randn(2 * hidden + 2, VALUE_HIDDEN, generator=g) / (2 * hidden) ** 0.5,
            "v_b1": torch.zeros(VALUE_HIDDEN), "v_w2": torch.randn(VALUE_HIDDEN, generator=g) / VALUE_HIDDEN ** 0.5,
            "v_b2": torch.zeros(1)}


def retain(old_values: list[float], new_values: list[float], groups: list[int], *, slots: int,
           margin: float) -> list[int]:
    """Indices into old slots + new candidates of the kept ones, in index order: whole groups (words),
    the most valuable first, an old slot counted `margin` higher. groups: one id per index."""
    ranked = [v + margin for v in old_values] + list(new_values)
    return fill_whole(ranked, groups, slots)


def word_ids(starts: list[bool]) -> list[int]:
    """A word id per token from word-start flags (a first token always starts a word).

    >>> word_ids([True, False, True, True, False])
    [0, 0, 1, 2, 2]
    """
    ids, n = [], -1
    for i, s in enumerate(starts):
        n += 1 if (s or i == 0) else 0
        ids.append(n)
    return ids


def old_groups(values: list[float]) -> list[int]:
    """Old slots' word ids: a word was stored as a run of one value (its tokens' largest).

    >>> old_groups([4.0, 4.0, 1.5, 2.0, 2.0])
    [0, 0, 1, 2, 2]
    """
    ids, n = [], -1
    for i, v in enumerate(values):
        n += 1 if (i == 0 or v != values[i - 1]) else 0
        ids.append(n)
    return ids


@dataclass(frozen=True)
class Retained:
    """Learned value at write time, whole words, no age decay, no per-turn cap (see the module docstring)."""

    name: str = "retained"
    # Only the user's text competes: in a chat what needs keeping is what the person said (and the
    # harness's scripted acknowledgements must not win places).
    prior: Select = field(default_factory=lambda: Select(decay=1.0, per_turn=0, user_only=True))
    margin: float = 0.5
    needs_surprise: bool = True
    needs_words: bool = True
    extra_columns: int = 1  # the slot's value
    fills_gradually: bool = True
    param_names: ClassVar[tuple[str, ...]] = MAP_PARAMS + VALUE_PARAMS

    def init_params(self, hidden: int, seed: int = 0) -> dict[str, torch.Tensor]:
        return {**init_map(hidden, seed=seed), **init_value(hidden, seed=seed)}

    def roll(self, old: torch.Tensor | None, states: torch.Tensor, surprise: list[float], words: list[int],
             slots: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """The next engram [N, H+1] from the old one [n, H+1] (or None) and the turn's m candidate states
        [m, H] with their surprise and word ids; the training simulation calls this very function."""
        hidden = states.shape[-1]
        old = states.new_zeros((0, hidden + 1)) if old is None else old.float()
        values = value_scores(states, torch.tensor(surprise), params).tolist() if states.shape[0] else []
        values = word_max(values, [i == 0 or words[i] != words[i - 1] for i in range(len(words))])
        old_values = old[:, hidden].tolist()
        groups = old_groups(old_values)
        base = (groups[-1] + 1) if groups else 0
        groups += [base + w for w in words]
        top = retain(old_values, values, groups, slots=slots, margin=self.margin)
        n_old = old.shape[0]
        new_rows = [i - n_old for i in top if i >= n_old]
        mapped = nudge(states[new_rows], params) if new_rows else states.new_zeros((0, hidden))
        rows, j = [], 0
        for i in top:
            if i < n_old:
                rows.append(old[i])
            else:
                rows.append(torch.cat([mapped[j], mapped.new_tensor([values[i - n_old]])]))
                j += 1
        return torch.stack(rows) if rows else old.new_zeros((0, hidden + 1))

    def entering(self, states: torch.Tensor, fixed: dict | None = None) -> torch.Tensor:
        return nudge(states, fixed)

    def write(self, w: Written, slots: int, fixed: dict | None = None) -> torch.Tensor:
        comps = self.prior.competitors(w)
        states = w.states.float()[comps]
        surprise = [float(w.surprise[i]) for i in comps]
        starts = [bool(w.words[i]) for i in comps] if w.words is not None else [True] * len(comps)
        return self.roll(w.engram, states, surprise, word_ids(starts), slots, fixed).detach().cpu()
