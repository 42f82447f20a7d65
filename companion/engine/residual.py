"""Writing vectors into the residual stream, and reading per-token surprise off logits.

    ResidualWrite(block, rows)  context: block's input gets rows' vectors at their positions
    surprise_of(logits, ids)    [T] -log p(ids[t] | ids[:t])
    surprise_of(logits[2:], ids, start=2)   the same from position 3 on (zeros before)

    >>> import torch
    >>> surprise_of(torch.zeros(3, 4), [0, 1, 2]).tolist()  # uniform over 4 tokens
    [0.0, 1.3862943649291992, 1.3862943649291992]
    >>> surprise_of(torch.zeros(2, 4), [0, 1, 2], start=1).tolist()
    [0.0, 0.0, 1.3862943649291992]
"""

from __future__ import annotations

import torch


def surprise_of(logits: torch.Tensor, ids: list[int], start: int = 0) -> torch.Tensor:
    """[T] -log p(ids[t] | ids[:t]) from [T - start, V] logits of positions start.. of the same
    sequence (a pass that kept only those); 0 at t <= start, where there is no logit before it."""
    lp = torch.log_softmax(logits[:-1].float(), dim=-1)
    tgt = torch.tensor(ids[start + 1:], device=logits.device)[:, None]
    return torch.cat([lp.new_zeros(start + 1), -lp.gather(1, tgt)[:, 0]]).cpu()


class NoWrite:
    """The do-nothing context for readers that place the engram at the input."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class ResidualWrite:
    """A forward pre-hook on one block that overwrites slot positions of its input hidden states.

    It acts on every call while the context is open, so callers open it around
    a single prefill call only; decode steps after it are never touched.
    """

    def __init__(self, block: torch.nn.Module, rows: list[tuple[int, list[int], torch.Tensor]]):
        self.block, self.rows, self.handle = block, [r for r in rows if r[2] is not None and r[1]], None

    def _hook(self, _module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        hidden = hidden.clone()
        for row, positions, vectors in self.rows:
            hidden[row, positions] = vectors.to(device=hidden.device, dtype=hidden.dtype)
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    def __enter__(self):
        if self.rows:
            self.handle = self.block.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.remove()
        return False
