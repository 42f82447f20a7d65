"""Does the engram harm chat? NLL of the true next utterance with and without memory.

Replays a LoCoMo conversation turn by turn. Before each turn is absorbed, the
partner's true reply is scored teacher-forced after the user's line: once with
the recipe's engram of everything before it, once with no memory. An engram
that confuses the model raises the first above the second.

    rows = next_turn_nll(engines, turns)  # engines: {recipe: Engine}; turns: [(user, reply)]
    summarise(rows) -> {mode: {"mean", "low", "high", "n"}, "diff:<recipe>": paired difference to none}
"""

from __future__ import annotations

from ..harness.nll import mean_ci


def next_turn_nll(engines: dict, turns: list[tuple[str, str]], *, conv_id: str = "", start: int = 0) -> list[dict]:
    """One row per turn with a reply from turn `start` on (the turns before only build the engrams):
    {"conv", "turn", "tokens", "none": nll, <recipe>: nll, ...} (nats/token)."""
    first = next(iter(engines.values()))
    engrams = {r: None for r in engines}
    rows = []
    for i, (user, reply) in enumerate(turns):
        if i >= start and reply.strip() and user.strip():
            total, n = first.answer_nll(None, user, reply)
            row = {"conv": conv_id, "turn": i, "tokens": n, "none": total / n if n else None}
            for r, engine in engines.items():
                s, m = engine.answer_nll(engrams[r], user, reply)
                row[r] = s / m if m else None
            rows.append(row)
        for r, engine in engines.items():
            engrams[r] = engine.absorb(engrams[r], user, reply).engram
    return rows


def summarise(rows: list[dict], recipes: list[str]) -> dict:
    """Mean per-token NLL per mode, and each recipe's paired difference to no memory (negative: helps)."""
    ok = [r for r in rows if r["none"] is not None and all(r[x] is not None for x in recipes)]
    out = {"none": mean_ci([r["none"] for r in ok])}
    for x in recipes:
        out[x] = mean_ci([r[x] for r in ok])
        out[f"diff:{x}"] = mean_ci([r[x] - r["none"] for r in ok])
    return out
