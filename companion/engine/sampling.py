"""How the next token is chosen: greedy by default, or sampled with a temperature and top-p.

    Sampling()                                  greedy (the harnesses never pass anything else)
    Sampling(temperature=0.8, top_p=0.9, seed=7)  turn N draws from a generator seeded with 7 + N

Seeding per turn (seed + the turn's number) makes a replayed conversation
reproduce, while the turns of one conversation still differ from each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0: greedy (argmax)
    top_p: float = 1.0  # keep the smallest set of tokens whose probability reaches top_p
    seed: int | None = None  # None: a fresh random draw every turn

    def __post_init__(self):
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a number >= 0 (0 is greedy), not {self.temperature}")
        if not (0 < self.top_p <= 1):
            raise ValueError(f"top-p must be above 0 and at most 1, not {self.top_p}")
        if self.greedy and (self.top_p != 1.0 or self.seed is not None):
            # Refused rather than ignored: a seed or top-p that silently changes nothing misleads.
            raise ValueError("--top-p and --seed only apply to sampling; give --temperature above 0 as well")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generator(self, turn: int) -> torch.Generator | None:
        """The random source of turn `turn` (None when greedy)."""
        if self.greedy:
            return None
        gen = torch.Generator()
        if self.seed is None:
            gen.seed()
        else:
            gen.manual_seed(self.seed + turn)
        return gen

    def describe(self) -> str:
        if self.greedy:
            return "greedy"
        seed = "" if self.seed is None else f", seed {self.seed}"
        return f"temperature {self.temperature:g}, top-p {self.top_p:g}{seed}"


def pick(logits: torch.Tensor, sampling: Sampling | None, generator: torch.Generator | None) -> int:
    """The next token id from one position's logits."""
    if sampling is None or sampling.greedy:
        return int(torch.argmax(logits))
    # On the CPU in float32, so a seed gives the same draw on any device and dtype.
    probs = torch.softmax(logits.detach().float().cpu() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        ranked, order = probs.sort(descending=True)
        # Keep a token while the mass before it is still short of top_p (the best always stays).
        keep = (ranked.cumsum(0) - ranked) < sampling.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], ranked[keep])
    return int(torch.multinomial(probs, 1, generator=generator))
