"""The engram math: pure tensor functions, no I/O and no model calls.

    extract  hidden_states tuple -> [T, H] states after block L
    pool     [T, H] -> [min(N, T), H] means of N contiguous chunks
    scale    [N, H] -> [N, H] one factor so mean row norm == target
    inject   engram [N, H] + prompt embeds [1, T, H] -> [1, N+T, H] and mask

Example (a 4-token sequence pooled to 2 slots):
    >>> import torch
    >>> pool(torch.tensor([[1.], [3.], [5.], [7.]]), 2)
    tensor([[2.],
            [6.]])
"""

from __future__ import annotations

import torch


def extract(hidden_states: tuple[torch.Tensor, ...], layer: int) -> torch.Tensor:
    """States after block `layer` of the first batch row: [T, H].

    hidden_states is what a transformers model returns with
    output_hidden_states=True: index 0 is the embedding output.
    """
    if not 0 <= layer < len(hidden_states):
        raise IndexError(f"layer {layer} not in 0..{len(hidden_states) - 1}")
    return hidden_states[layer][0]


def chunk_bounds(length: int, slots: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) chunks covering 0..length, sizes differing by at most 1.

    A sequence shorter than `slots` gives one chunk per position (fewer slots),
    so no chunk is ever empty and no mean is NaN.
    >>> chunk_bounds(5, 2)
    [(0, 3), (3, 5)]
    >>> chunk_bounds(2, 4)
    [(0, 1), (1, 2)]
    """
    if length <= 0:
        return []
    n = min(slots, length)
    edges = [(i * length) // n for i in range(n + 1)]
    # Integer division puts the larger chunks last; mirror so earlier chunks take the remainder.
    edges = [length - e for e in reversed(edges)]
    return list(zip(edges[:-1], edges[1:]))


def pool(states: torch.Tensor, slots: int) -> torch.Tensor:
    """Mean of each of `slots` contiguous chunks: [T, H] -> [min(slots, T), H]."""
    if states.dim() != 2:
        raise ValueError(f"pool expects [T, H], got shape {tuple(states.shape)}")
    bounds = chunk_bounds(states.shape[0], slots)
    if not bounds:
        return states.new_zeros((0, states.shape[1]))
    # Pool in float32 so bf16/fp16 models don't lose precision in long means.
    s = states.float()
    return torch.stack([s[a:b].mean(dim=0) for a, b in bounds])


def mean_row_norm(matrix: torch.Tensor) -> float:
    """Average L2 norm of the rows of a [N, H] matrix (0.0 for no rows)."""
    if matrix.shape[0] == 0:
        return 0.0
    return matrix.float().norm(dim=-1).mean().item()


def scale(engram: torch.Tensor, target_norm: float) -> torch.Tensor:
    """Multiply by one factor so the mean row norm becomes target_norm.

    An all-zero (or empty) engram is returned unchanged instead of dividing by 0.
    """
    current = mean_row_norm(engram)
    if current == 0.0:
        return engram.clone()
    return engram * (target_norm / current)


def inject(
    engram: torch.Tensor | None, embeds: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prepend engram [N, H] to embeds [B, T, H]; returns ([B, N+T, H], mask [B, N+T]).

    None or an empty engram leaves the embeddings as they are.
    """
    if attention_mask is None:
        attention_mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
    if engram is None or engram.shape[0] == 0:
        return embeds, attention_mask
    if engram.shape[-1] != embeds.shape[-1]:
        raise ValueError(f"engram width {engram.shape[-1]} != model width {embeds.shape[-1]}")
    batch = embeds.shape[0]
    prefix = engram.to(device=embeds.device, dtype=embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
    prefix_mask = attention_mask.new_ones((batch, engram.shape[0]))
    return torch.cat([prefix, embeds], dim=1), torch.cat([prefix_mask, attention_mask], dim=1)


def effective_rank(engram: torch.Tensor) -> float:
    """exp(entropy) of the normalised singular values: 1 for rank-1, N for isotropic."""
    if engram.shape[0] == 0:
        return 0.0
    s = torch.linalg.svdvals(engram.float())
    total = s.sum()
    if total == 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two engrams flattened (shapes must match)."""
    return float(torch.nn.functional.cosine_similarity(a.flatten().float(), b.flatten().float(), dim=0))
