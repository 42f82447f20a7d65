"""A trained writer: select-sticky's choice of token states, re-weighted by learned attention.

Select keeps N whole token states and decides by surprise alone; it cannot
learn that a user's "my sister is called X" matters more than a surprising
word of small talk. `Anchored` starts from Select's choice and lets each of
the N output slots attend over every candidate (old slots and the turn's
tokens), anchored to the state Select chose:

    x      = layer_norm(C)                          C: [M, H] old slots + new candidates
    logits = (x[chosen] Wq)(x Wk)^T / sqrt(d) + x u + beta * onehot(chosen)
    slot_i = softmax(logits_i) @ C                  -> [N, H]

With beta large and the learned parts small (as initialised) this is Select;
training moves weight to other candidates only where the answer likelihood of
facts asked turns later improves (companion.training). Every output is a
convex mixture of real layer-L states, so it stays where the reader expects
states. The language model never changes; the parameters (Wq, Wk: [H, d],
u: [H], beta: [1]) are fixed tensors of the recipe, pinned by hash.

    >>> import torch
    >>> p = init_params(hidden=4, key_dim=2, seed=0)
    >>> c = torch.eye(4)
    >>> attend(c, [2, 0], p).argmax(dim=-1).tolist()  # at init each slot is (almost) its anchor
    [2, 0]
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..errors import ConfigError, WrongModel
from .base import Written
from .writers import Select

PARAMS = ("wq", "wk", "u", "beta")
ENV = "COMPANION_TRAINED_WEIGHTS"  # another weights file, e.g. a training run's output, for experiments


@dataclass
class Weights:
    """Where a trained writer's tensors are shipped, the sha256 that file must have (a different
    file is refused, and a session stores the hash of the tensors it was built with), and the
    environment variable that points the recipe at another file (a training run's output)."""

    path: Path
    sha256: str
    env: str
    names: tuple[str, ...]


# The shipped weights (scripts/train_engram.py; command and loss curve in docs/HISTORY.md, "A trained writer").
ANCHORED_WEIGHTS = Weights(Path(__file__).parent / "weights" / "select-trained.safetensors",
                           "71d1022f4ddc585900669a6148ac0c9e6dbf96469966c797ec3d3dbfd4e9c1e0", ENV, PARAMS)


def init_params(hidden: int, key_dim: int = 64, seed: int = 0, beta: float = 8.0) -> dict[str, torch.Tensor]:
    """Parameters at which Anchored is (almost exactly) Select."""
    g = torch.Generator().manual_seed(seed)
    return {"wq": torch.randn(hidden, key_dim, generator=g) * 0.02,
            "wk": torch.randn(hidden, key_dim, generator=g) * 0.02,
            "u": torch.zeros(hidden), "beta": torch.tensor([beta])}


def attend(cands: torch.Tensor, chosen: list[int], params: dict[str, torch.Tensor], *, hard: bool = False) -> torch.Tensor:
    """[M, H] candidates and N anchor indices -> [N, H] slots (differentiable in cands and params).

    hard=True: each slot is the one candidate it weights most (a real state, no mixture; not differentiable).
    """
    x = F.layer_norm(cands.float(), cands.shape[-1:])
    q, k = x[chosen] @ params["wq"], x @ params["wk"]
    logits = q @ k.T / math.sqrt(k.shape[-1]) + (x @ params["u"])[None, :]
    anchor = F.one_hot(torch.tensor(chosen, device=cands.device), cands.shape[0]).to(logits.dtype)
    logits = logits + params["beta"] * anchor
    if hard:
        return cands.float()[logits.argmax(dim=-1)]
    return torch.softmax(logits, dim=-1) @ cands.float()


@dataclass(frozen=True)
class Anchored:
    """Select's choice, softened by learned attention (see the module docstring)."""

    name: str = "anchored"
    prior: Select = field(default_factory=lambda: Select(decay=1.0, per_turn=2))
    needs_surprise: bool = True
    extra_columns: int = 1  # the prior's salience, which decides what a later turn may replace
    fills_gradually: bool = True
    hard: bool = False  # each slot takes its most-weighted candidate whole instead of the mixture
    param_names: ClassVar[tuple[str, ...]] = PARAMS

    def init_params(self, hidden: int, seed: int = 0) -> dict[str, torch.Tensor]:
        return init_params(hidden, seed=seed)

    def slots_of(self, cands: torch.Tensor, top: list[int], n_old: int, params: dict) -> torch.Tensor:
        """[N, H] slots from the [M, H] candidates (n_old old slots first) and the kept indices."""
        return attend(cands, top, params, hard=self.hard)

    def entering(self, states: torch.Tensor, fixed: dict | None = None) -> torch.Tensor | None:
        """A chosen state as it enters the engram: itself when hard; a soft slot mixes candidates and
        has no single source (None)."""
        return states.float() if self.hard else None

    def roll(self, old: torch.Tensor | None, states: torch.Tensor, surprise: list[float], slots: int,
             params: dict[str, torch.Tensor]) -> torch.Tensor:
        """The next engram [N, H+1] from the old one [n, H+1] (or None) and the turn's competing
        token states [m, H] with their surprise; the training loop calls this very function."""
        hidden = states.shape[-1]
        old = states.new_zeros((0, hidden + 1)) if old is None else old
        picked = self.prior.cap(list(range(states.shape[0])), surprise, old.shape[0], slots)
        cands = torch.cat([old[:, :hidden].float(), states[picked].float()])
        if cands.shape[0] == 0:
            return cands.new_zeros((0, hidden + 1))
        old_sal = old[:, hidden].detach().tolist()
        new_sal = [float(surprise[i]) for i in picked]
        top = self.prior.keep(old_sal, new_sal, slots)
        sal = [s * self.prior.decay for s in old_sal] + new_sal
        column = cands.new_tensor([sal[i] for i in top])[:, None]
        return torch.cat([self.slots_of(cands, top, old.shape[0], params), column], dim=1)

    def write(self, w: Written, slots: int, fixed: dict | None = None) -> torch.Tensor:
        comps = self.prior.competitors(w)
        states = w.states.float()[comps]
        surprise = [float(w.surprise[i]) for i in comps]
        return self.roll(w.engram, states, surprise, slots, fixed).detach().cpu()


def weights_path(spec: Weights = ANCHORED_WEIGHTS) -> Path:
    return Path(os.environ[spec.env]) if os.environ.get(spec.env) else spec.path


@lru_cache(maxsize=4)
def _load(path: str, version: tuple[int, int, int]) -> tuple[str, dict[str, torch.Tensor]]:
    """(sha256 of the file, its tensors), read once per file version: (mtime_ns, size, inode), since a file
    rewritten within one tick of the clock keeps its mtime on coarse file systems."""
    from safetensors.torch import load

    data = Path(path).read_bytes()
    return hashlib.sha256(data).hexdigest(), load(data)


def load_params(engine, spec: Weights = ANCHORED_WEIGHTS) -> dict[str, torch.Tensor]:
    """The recipe's weights for this engine's model, checked; ConfigError with the reason if unusable."""
    path = weights_path(spec)
    if not path.is_file():
        raise ConfigError(f"no trained writer weights at {path}: train them with scripts/train_engram.py "
                          f"(or point {spec.env} at a weights file)")
    st = path.stat()
    digest, params = _load(str(path), (st.st_mtime_ns, st.st_size, st.st_ino))
    if path == spec.path and digest != spec.sha256:
        raise ConfigError(f"{path} is not the shipped trained writer (sha256 differs from the recorded "
                          f"{spec.sha256[:12]}); restore it with git or retrain with the recorded command")
    missing = [n for n in spec.names if n not in params]
    if missing:
        raise ConfigError(f"{path} lacks the trained writer's tensors {', '.join(missing)}")
    hidden, found = engine.lm.hidden_size, params[spec.names[0]].shape[0]
    if found != hidden:
        raise WrongModel(f"the trained writer in {path} is for hidden size {found}, "
                          f"this model's is {hidden}; train one for this model with scripts/train_engram.py --model")
    return params


def fixed_builders(spec: Weights = ANCHORED_WEIGHTS) -> dict:
    """Recipe.fixed entries: each parameter a fixed tensor, so the session's hash pins all of them."""
    return {name: (lambda engine, n=name: load_params(engine, spec)[n].to(engine.lm.device)) for name in spec.names}
