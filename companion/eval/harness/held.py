"""How long a fact stays in the engram: the turn at which the last slot holding its statement left.

A token-keeping writer (select-*, select-chat, select-keep) copies a kept slot's
state part unchanged from turn to turn, so the slots the fact's turn wrote can
be followed by exact equality: a slot is held while some row of the engram
equals it. Of those, the fact's own are the ones that came from the statement's
tokens (not the template or the reply), found as companion.engine.sources finds
a slot's token: the turn's states again, as the writer lets them enter. An
averaging writer (seed) rewrites every slot every turn; it has no such slots,
and gets None.

    >>> import torch
    >>> before = torch.tensor([[1., 0.], [0., 1.]])
    >>> after = torch.tensor([[1., 0.], [2., 2.], [3., 3.]])
    >>> new_rows(before, after).tolist()
    [[2.0, 2.0], [3.0, 3.0]]
    >>> held(new_rows(before, after), torch.tensor([[3., 3.], [1., 0.]]))
    1
    >>> summarise([{"entered": 4, "left_at": 7}, {"entered": 2, "left_at": None}, {"entered": 0, "left_at": 0}], 100)
    {'trials': 3, 'entered_mean': 2.0, 'left_at': [0, 7, None], 'held_to_end': 1, 'never_entered': 1}
"""

from __future__ import annotations

import torch

from companion.engine.recipes.writers import state_part
from companion.engine.sources import match_rows


def new_rows(before: torch.Tensor | None, after: torch.Tensor) -> torch.Tensor:
    """The rows [n, D] of `after` [N, D] that equal no row of `before` [M, D] (None: every row is new)."""
    if before is None or before.shape[0] == 0:
        return after
    same = (after[:, None, :] == before[None, :, :]).all(dim=-1).any(dim=1)
    return after[~same]


def held(rows: torch.Tensor, engram: torch.Tensor | None) -> int:
    """How many of `rows` [n, D] some row of `engram` [N, D] still equals."""
    if engram is None or rows.shape[0] == 0:
        return 0
    return int((rows[:, None, :] == engram[None, :, :]).all(dim=-1).any(dim=1).sum())


def statement_rows(engine, before: torch.Tensor | None, rows: torch.Tensor, turn: tuple[str, str]) -> torch.Tensor | None:
    """Of `rows` [n, H] (slots a turn wrote), those that came from the turn's user text; None when the
    writer has no single source per slot."""
    enter = getattr(engine.writer, "entering", None)
    if enter is None or rows.shape[0] == 0:
        return None if enter is None else rows
    p = engine.place(before, *turn)
    states = engine.turn_states(before, *turn)
    end = p.user_end if p.user_end is not None else states.shape[0]
    positions = [i for i in range(p.content, end) if i not in set(p.slots)]
    cands = enter(states[positions].float(), engine.fixed)
    if cands is None:
        return None
    found = match_rows(rows, None, cands.detach().float().cpu(), cols=0)
    return rows[[j for j, m in enumerate(found) if m is not None]]


class FactSlots:
    """Per recipe: the slots holding the fact's statement (with `turn`: the statement's own tokens; without,
    every slot its turn wrote), and the k (distractor turns after it) at which the last of them left.
    engines: recipe -> Engine; before/after: recipe -> engram around the fact's turn."""

    def __init__(self, engines: dict, before: dict, after: dict, turn: tuple[str, str] | None = None):
        self.cols = {r: e.writer.extra_columns for r, e in engines.items()}
        self.rows: dict[str, torch.Tensor | None] = {}
        for r, engine in engines.items():
            keeps = getattr(engine.writer, "fills_gradually", False)  # averaging writers rewrite every slot
            part = lambda x: None if x is None else state_part(x, self.cols[r]).float()  # noqa: E731
            self.rows[r] = new_rows(part(before[r]), part(after[r])) if keeps else None
            if self.rows[r] is not None and turn is not None:
                self.rows[r] = statement_rows(engine, before[r], self.rows[r], turn)
        self.left_at: dict[str, int | None] = {r: (0 if x is not None and x.shape[0] == 0 else None)
                                               for r, x in self.rows.items()}
        self.now: dict[str, int | None] = {r: (None if x is None else x.shape[0]) for r, x in self.rows.items()}

    def step(self, k: int, engrams: dict) -> None:
        """After the k-th distractor turn; engrams: recipe -> the engram now."""
        for r, rows in self.rows.items():
            if rows is None or self.left_at[r] is not None:
                continue
            self.now[r] = held(rows, state_part(engrams[r], self.cols[r]).float())
            if self.now[r] == 0:
                self.left_at[r] = k

    def record(self) -> dict:
        """recipe -> {entered, left_at} (left_at None: still held at the last turn lived); None for averaging writers."""
        return {r: (None if rows is None else {"entered": int(rows.shape[0]), "left_at": self.left_at[r]})
                for r, rows in self.rows.items()}


def summarise(records: list[dict | None], kmax: int) -> dict | None:
    """One recipe's trials' {entered, left_at} -> counts over trials (None: an averaging writer)."""
    got = [r for r in records if r is not None]
    if not got:
        return None
    lefts = sorted((r["left_at"] for r in got), key=lambda v: kmax + 1 if v is None else v)
    return {"trials": len(got), "entered_mean": sum(r["entered"] for r in got) / len(got), "left_at": lefts,
            "held_to_end": sum(r["left_at"] is None for r in got),
            "never_entered": sum(r["entered"] == 0 for r in got)}
