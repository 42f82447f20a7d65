"""What the service hands back about turns: plain values, no tensors."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TurnReport:
    reply: str
    cycle: int  # turns committed in the session, this one included
    prompt_tokens: int  # engram slots + this input
    transcript_tokens: int  # what carrying the whole transcript as text would have cost
    reply_tokens: int
    gen_seconds: float
    update_seconds: float
    engram_norm: float
    cut: bool = False  # the reply stopped at max_new_tokens (/more continues it)
    recalled: tuple[int, ...] = ()  # numbers of the stored turns --recall put in front of the input


@dataclass(frozen=True)
class TurnView:
    index: int
    user: str
    reply: str
    prompt_tokens: int
    transcript_tokens: int
    reply_tokens: int
    seconds: float
    engram_shape: str
    engram_norm: float
    engram_ok: str  # "ok" or why the stored engram cannot be used
