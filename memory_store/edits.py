"""Edits of a session's past: drop its last turn (undo, retry) and rewrite its latest engram (forget).

Like crud, nothing here commits, and every edit is guarded by the session's
cycle, so an edit and a turn committed by another process never interleave:
whichever commits second is refused with StaleSessionError and stores nothing.
"""

from __future__ import annotations

import json
from datetime import datetime

import torch
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from memory_store.codec import dtype_name, encode_engram
from memory_store.crud import _row_norm, _where, load_engram
from memory_store.errors import StaleSessionError
from memory_store.models import ChatSession, Engram, Forget, SystemPrompt, Turn, utcnow


def engram_at(db: Session, *, chat: ChatSession, cycle: int) -> tuple[torch.Tensor, Engram] | None:
    """The engram stored with turn `cycle`, verified; None if there is none."""
    row = db.scalars(select(Engram).where(Engram.session_id == chat.id, Engram.cycle == cycle)).first()
    return None if row is None else (load_engram(row, where=_where(chat.name, cycle)), row)


def _guard(db: Session, chat: ChatSession, expected_cycle: int, new_cycle: int) -> None:
    """The conditional UPDATE that is the lock (as in crud.add_turn)."""
    now = utcnow()
    result = db.execute(
        update(ChatSession)
        .where(ChatSession.id == chat.id, ChatSession.cycle == expected_cycle)
        .values(cycle=new_cycle, last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise StaleSessionError(f"session {chat.name!r} moved on since it was loaded (expected cycle "
                                f"{expected_cycle}); another Companion process changed it first")
    set_committed_value(chat, "cycle", new_cycle)
    set_committed_value(chat, "last_used_at", now)


def turn_at(db: Session, *, chat: ChatSession, index: int) -> Turn | None:
    return db.scalars(select(Turn).where(Turn.session_id == chat.id, Turn.index == index)).first()


def drop_last_turn(db: Session, *, chat: ChatSession, expected_cycle: int, keep_prompt: bool = False) -> Turn:
    """Remove turn `expected_cycle` (the last), its engram, the forgets of that engram and (unless
    keep_prompt: a retry makes the same turn again) a system prompt set from that turn; the session's cycle
    goes back by one. Returns the dropped turn (detached data)."""
    turn = turn_at(db, chat=chat, index=expected_cycle)
    if turn is None:
        raise StaleSessionError(f"session {chat.name!r} has no turn {expected_cycle} to drop")
    _guard(db, chat, expected_cycle, expected_cycle - 1)
    db.execute(delete(Engram).where(Engram.session_id == chat.id, Engram.cycle == expected_cycle))
    db.execute(delete(Forget).where(Forget.session_id == chat.id, Forget.cycle == expected_cycle))
    if not keep_prompt:
        db.execute(delete(SystemPrompt).where(SystemPrompt.session_id == chat.id,
                                              SystemPrompt.from_turn == expected_cycle))
    db.expunge(turn)
    db.execute(delete(Turn).where(Turn.id == turn.id))
    return turn


def rewrite_engram(db: Session, *, chat: ChatSession, row: Engram, engram: torch.Tensor, sources: str | None,
                   asked: str, removed: list[dict], slots_before: int) -> Forget:
    """Replace the latest engram's tensor (a forget) and record what was taken out. Guarded twice: the
    session must still be at that engram's cycle, and the engram unchanged since it was read."""
    if not bool(torch.isfinite(engram).all()):
        raise ValueError(f"refusing to store a non-finite engram for session {chat.name!r}")
    _guard(db, chat, row.cycle, row.cycle)
    data, sha = encode_engram(engram)
    result = db.execute(
        update(Engram)
        .where(Engram.id == row.id, Engram.sha256 == row.sha256)
        .values(data=data, sha256=sha, dtype=dtype_name(engram), shape=",".join(str(d) for d in engram.shape),
                norm=_row_norm(engram), sources=sources)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise StaleSessionError(f"the engram of {_where(chat.name, row.cycle)} changed since it was read")
    return record_forget(db, chat=chat, cycle=row.cycle, asked=asked, removed=removed, slots_before=slots_before,
                         slots_after=int(engram.shape[0]))


def record_forget(db: Session, *, chat: ChatSession, cycle: int, asked: str, removed: list[dict], slots_before: int,
                  slots_after: int, created_at: datetime | None = None) -> Forget:
    """The row `show` lists (also how import brings a session's forgets back); flushes."""
    forget = Forget(session_id=chat.id, cycle=cycle, asked=asked, removed=json.dumps(removed),
                    slots_before=slots_before, slots_after=slots_after, created_at=created_at or utcnow())
    db.add(forget)
    db.flush()
    return forget


def forgets(db: Session, *, chat: ChatSession) -> list[Forget]:
    return list(db.scalars(select(Forget).where(Forget.session_id == chat.id).order_by(Forget.id)))
