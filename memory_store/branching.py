"""Forking a session at a turn, and renaming one.

A fork copies rows; it never updates or deletes any row of the source, so
the original stays byte-identical. The engram blobs are copied as they are
(with their sha256), so the fork's first turn injects exactly the source's
engram of that turn. Nothing here commits.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from memory_store.crud import get_session, validate_session_name
from memory_store.errors import StaleSessionError
from memory_store.models import ChatSession, Engram, Forget, SystemPrompt, Turn, utcnow

_TURN_COLUMNS = ("index", "user_text", "reply_text", "prompt_tokens", "reply_tokens", "transcript_tokens",
                 "gen_seconds", "update_seconds", "created_at")
_ENGRAM_COLUMNS = ("cycle", "data", "dtype", "shape", "sha256", "norm", "config", "created_at", "sources")
_FORGET_COLUMNS = ("cycle", "asked", "removed", "slots_before", "slots_after", "created_at")


def _taken(name: str) -> StaleSessionError:
    return StaleSessionError(f"a session named {name!r} already exists; choose another name")


def fork_session(db: Session, *, source: ChatSession, name: str, at: int) -> ChatSession:
    """A new session `name` holding source's turns 1..at, their engrams and system prompts; flushes."""
    validate_session_name(name)
    if not 0 <= at <= source.cycle:
        raise ValueError(f"turn {at} is outside session {source.name!r} (0..{source.cycle})")
    now = utcnow()
    fork = ChatSession(name=name, model_name=source.model_name, model_fingerprint=source.model_fingerprint,
                       engram_config=source.engram_config, cycle=at, recall=source.recall,
                       created_at=now, last_used_at=now)
    db.add(fork)
    try:
        db.flush()
    except IntegrityError as exc:
        raise _taken(name) from exc
    engrams = {e.cycle: e for e in db.scalars(select(Engram).where(Engram.session_id == source.id,
                                                                    Engram.cycle <= at))}
    for t in db.scalars(select(Turn).where(Turn.session_id == source.id, Turn.index <= at).order_by(Turn.index)):
        copy = Turn(session_id=fork.id, **{c: getattr(t, c) for c in _TURN_COLUMNS})
        e = engrams.get(t.index)
        if e is not None:
            copy.engram = Engram(session_id=fork.id, **{c: getattr(e, c) for c in _ENGRAM_COLUMNS})
        db.add(copy)
    # The prompts of turns 1..at, so the fork goes on with the one turn `at` had; a change the source
    # made from turn at+1 on belongs to a turn the fork does not have. At 0: the prompt it was created with.
    for p in db.scalars(select(SystemPrompt).where(SystemPrompt.session_id == source.id,
                                                   SystemPrompt.from_turn <= max(at, 1))):
        db.add(SystemPrompt(session_id=fork.id, from_turn=p.from_turn, text=p.text, created_at=p.created_at))
    # What was forgotten from the engrams it takes (the fork's latest engram is one of them).
    for f in db.scalars(select(Forget).where(Forget.session_id == source.id, Forget.cycle <= at).order_by(Forget.id)):
        db.add(Forget(session_id=fork.id, **{c: getattr(f, c) for c in _FORGET_COLUMNS}))
    db.flush()
    return fork


def rename_session(db: Session, *, name: str, new_name: str) -> bool:
    """Rename; False if there is no session `name`. A taken new_name raises StaleSessionError."""
    validate_session_name(new_name)
    chat = get_session(db, name=name)
    if chat is None:
        return False
    try:
        db.execute(update(ChatSession).where(ChatSession.id == chat.id).values(name=new_name)
                   .execution_options(synchronize_session=False))
        db.flush()
    except IntegrityError as exc:
        raise _taken(new_name) from exc
    return True
