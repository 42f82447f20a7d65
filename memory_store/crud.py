"""Reads and writes for sessions, turns and engrams.

Nothing here commits: the caller owns the transaction so that a turn's text,
its engram and the session's cycle bump land together or not at all::

    with store.session() as db, db.begin():
        crud.add_turn(db, chat=chat, expected_cycle=chat.cycle, ...)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import torch
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from memory_store.codec import decode_engram, dtype_name, encode_engram
from memory_store.errors import CorruptEngramError, SessionNameError, StaleSessionError
from memory_store.models import ChatSession, Engram, Forget, SystemPrompt, Turn, utcnow

MAX_NAME_LEN = 64
_NAME_CHARS = re.compile(r"[A-Za-z0-9._-]")


@dataclass(frozen=True)
class SessionSummary:
    name: str
    turns: int
    model: str
    created: str
    last_used: str
    cycle: int


def validate_session_name(name: str) -> str:
    """Return name unchanged or raise SessionNameError with a one-line reason.

    Names may end up in file names and shell prompts, hence the narrow alphabet.
    """
    if not isinstance(name, str):
        raise SessionNameError(f"session name must be a string, not {type(name).__name__}")
    if not name:
        raise SessionNameError("session name is empty")
    if len(name) > MAX_NAME_LEN:
        raise SessionNameError(
            f"session name is too long ({len(name)} characters, at most {MAX_NAME_LEN})"
        )
    for ch in name:
        if not _NAME_CHARS.fullmatch(ch):
            raise SessionNameError(
                f"session name contains {ch!r}, which is not allowed "
                "(use letters, digits, '.', '_' or '-')"
            )
    if not name[0].isascii() or not name[0].isalnum():
        raise SessionNameError(f"session name must start with a letter or digit, not {name[0]!r}")
    if ".." in name:
        raise SessionNameError("session name must not contain '..'")
    return name


def _config_json(config: dict[str, Any]) -> str:
    # sort_keys so equal configs compare equal as text.
    return json.dumps(config, sort_keys=True)


def _where(chat_name: str, cycle: int) -> str:
    return f"session {chat_name!r} cycle {cycle}"


def _row_norm(t: torch.Tensor) -> float:
    if t.numel() == 0:
        return 0.0
    f = t.detach().to(torch.float64)
    if f.dim() == 0:
        return float(f.abs())
    return float(f.reshape(-1, f.shape[-1]).norm(dim=-1).mean())


def get_session(db: Session, *, name: str) -> ChatSession | None:
    return db.scalars(select(ChatSession).where(ChatSession.name == name)).one_or_none()


def create_session(
    db: Session,
    *,
    name: str,
    model_name: str,
    model_fingerprint: str,
    engram_config: dict[str, Any],
    recall: int = 0,
) -> ChatSession:
    validate_session_name(name)
    now = utcnow()
    chat = ChatSession(
        name=name,
        model_name=model_name,
        model_fingerprint=model_fingerprint,
        engram_config=_config_json(engram_config),
        cycle=0,
        recall=recall,
        created_at=now,
        last_used_at=now,
    )
    db.add(chat)
    try:
        db.flush()
    except IntegrityError as exc:
        # Two terminals starting the same new session race here; surface it as
        # the same "someone else got there first" error add_turn uses.
        raise StaleSessionError(
            f"session {name!r} already exists (another Companion process may have just created it)"
        ) from exc
    return chat


def list_sessions(db: Session) -> list[SessionSummary]:
    """Newest first. Never touches engram blobs, so a corrupt row can't break the listing."""
    turn_count = (
        select(func.count(Turn.id))
        .where(Turn.session_id == ChatSession.id)
        .correlate(ChatSession)
        .scalar_subquery()
    )
    rows = db.execute(
        select(ChatSession, turn_count).order_by(
            ChatSession.last_used_at.desc(), ChatSession.name
        )
    ).all()
    return [
        SessionSummary(
            name=chat.name,
            turns=int(count),
            model=chat.model_name,
            created=chat.created_at.isoformat(),
            last_used=chat.last_used_at.isoformat(),
            cycle=chat.cycle,
        )
        for chat, count in rows
    ]


def add_turn(
    db: Session,
    *,
    chat: ChatSession,
    expected_cycle: int,
    user_text: str,
    reply_text: str,
    prompt_tokens: int,
    reply_tokens: int,
    transcript_tokens: int,
    gen_seconds: float,
    update_seconds: float,
    engram: torch.Tensor,
    engram_config: dict[str, Any],
    sources: str | None = None,
) -> Turn:
    """Record one turn and its engram as cycle expected_cycle + 1; flushes, never commits.

    On success chat.cycle and chat.last_used_at are updated in memory as well.
    If the caller's transaction then rolls back, reload the session with
    get_session rather than trusting chat. sources: the engram's slot sources as JSON (engrams.sources).
    """
    if (engram.is_floating_point() or engram.is_complex()) and not bool(
        torch.isfinite(engram).all()
    ):
        raise ValueError(f"refusing to store a non-finite engram for session {chat.name!r}")
    data, sha = encode_engram(engram)

    now = utcnow()
    # The conditional UPDATE is the lock: it fails for whichever of two
    # writers of the same session commits second, and on SQLite it also takes
    # the write lock before anything else in this turn is written.
    result = db.execute(
        update(ChatSession)
        .where(ChatSession.id == chat.id, ChatSession.cycle == expected_cycle)
        .values(cycle=ChatSession.cycle + 1, last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise StaleSessionError(
            f"session {chat.name!r} moved on since it was loaded (expected cycle "
            f"{expected_cycle}); another Companion process committed a turn first"
        )

    cycle = expected_cycle + 1
    # Linked by id, not relationship, so a chat loaded in another Session is not
    # pulled into this one.
    turn = Turn(
        session_id=chat.id,
        index=cycle,
        user_text=user_text,
        reply_text=reply_text,
        prompt_tokens=prompt_tokens,
        reply_tokens=reply_tokens,
        transcript_tokens=transcript_tokens,
        gen_seconds=gen_seconds,
        update_seconds=update_seconds,
        created_at=now,
    )
    turn.engram = Engram(
        session_id=chat.id,
        cycle=cycle,
        data=data,
        dtype=dtype_name(engram),
        shape=",".join(str(d) for d in engram.shape),
        sha256=sha,
        norm=_row_norm(engram),
        config=_config_json(engram_config),
        created_at=now,
        sources=sources,
    )
    db.add(turn)
    db.flush()
    # Committed-value set: mirrors the UPDATE without making chat dirty.
    set_committed_value(chat, "cycle", cycle)
    set_committed_value(chat, "last_used_at", now)
    return turn


def load_engram(row: Engram, *, where: str = "") -> torch.Tensor:
    try:
        shape = row.shape_tuple
    except ValueError as exc:
        reason = f"unreadable shape {row.shape!r}"
        raise CorruptEngramError(f"{where}: {reason}" if where else reason) from exc
    return decode_engram(
        row.data, sha256=row.sha256, shape=shape, dtype=row.dtype, where=where
    )


def latest_engram(db: Session, *, chat: ChatSession) -> tuple[torch.Tensor, Engram] | None:
    row = db.scalars(
        select(Engram)
        .where(Engram.session_id == chat.id)
        .order_by(Engram.cycle.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return load_engram(row, where=_where(chat.name, row.cycle)), row


def turns(db: Session, *, chat: ChatSession) -> list[Turn]:
    return list(db.scalars(select(Turn).where(Turn.session_id == chat.id).order_by(Turn.index)))


def last_turn(db: Session, *, chat: ChatSession) -> Turn | None:
    """The newest turn, without loading the others (a turn's cost must not grow with the session)."""
    return db.scalars(select(Turn).where(Turn.session_id == chat.id).order_by(Turn.index.desc()).limit(1)).first()


def last_turns(db: Session, *, chat: ChatSession, n: int) -> list[Turn]:
    """The newest n turns, oldest first."""
    rows = db.scalars(select(Turn).where(Turn.session_id == chat.id).order_by(Turn.index.desc()).limit(n))
    return list(rows)[::-1]


def engram_rows(db: Session, *, chat: ChatSession) -> list[Engram]:
    return list(
        db.scalars(select(Engram).where(Engram.session_id == chat.id).order_by(Engram.cycle))
    )


def delete_session(db: Session, *, name: str) -> bool:
    chat = get_session(db, name=name)
    if chat is None:
        return False
    # Explicit child deletes so the result doesn't depend on the backend
    # enforcing ON DELETE CASCADE, and no engram blobs get loaded.
    db.execute(delete(Engram).where(Engram.session_id == chat.id))
    db.execute(delete(SystemPrompt).where(SystemPrompt.session_id == chat.id))
    db.execute(delete(Forget).where(Forget.session_id == chat.id))
    db.execute(delete(Turn).where(Turn.session_id == chat.id))
    db.execute(delete(ChatSession).where(ChatSession.id == chat.id))
    return True


def touch(db: Session, *, chat: ChatSession) -> None:
    now = utcnow()
    db.execute(
        update(ChatSession)
        .where(ChatSession.id == chat.id)
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    set_committed_value(chat, "last_used_at", now)
