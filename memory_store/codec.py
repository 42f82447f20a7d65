"""Engram <-> bytes, with the checks that make a damaged row fail loudly.

safetensors is used instead of torch.save because torch.save is pickle: a
tampered database row must never be able to run code when a session loads.
"""

from __future__ import annotations

import hashlib

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from memory_store.errors import CorruptEngramError

_KEY = "engram"


def dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def encode_engram(t: torch.Tensor) -> tuple[bytes, str]:
    """Safetensors bytes of the tensor and the sha256 hex of those bytes."""
    data = st_save({_KEY: t.detach().contiguous().cpu()})
    return data, hashlib.sha256(data).hexdigest()


def decode_engram(
    data: bytes,
    *,
    sha256: str,
    shape: tuple[int, ...],
    dtype: str,
    where: str = "",
) -> torch.Tensor:
    """Inverse of encode_engram; raises CorruptEngramError(f"{where}: reason")."""

    def corrupt(reason: str) -> CorruptEngramError:
        return CorruptEngramError(f"{where}: {reason}" if where else reason)

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise corrupt(f"unreadable bytes (got {type(data).__name__})")
    data = bytes(data)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise corrupt(f"checksum mismatch (stored {sha256[:12]}…, computed {actual[:12]}…)")
    try:
        tensors = st_load(data)
    except Exception as exc:  # safetensors raises its own error types; all mean the same here
        raise corrupt(f"unreadable bytes ({exc})") from exc
    if set(tensors) != {_KEY}:
        raise corrupt(f"unreadable bytes (expected one tensor {_KEY!r}, found {sorted(tensors)})")
    t = tensors[_KEY]
    if tuple(t.shape) != tuple(shape):
        raise corrupt(f"shape mismatch (declared {tuple(shape)}, stored {tuple(t.shape)})")
    if dtype_name(t) != dtype:
        raise corrupt(f"dtype mismatch (declared {dtype}, stored {dtype_name(t)})")
    if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
        raise corrupt("non-finite values (NaN or Inf) in engram")
    return t
