"""Per-session settings a resume may change: the system prompt (as of a turn) and recall.

Like crud, nothing here commits; a changed system prompt is written in the
same transaction as the first turn it applies to, so it is never recorded for
a turn that did not happen.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from memory_store.models import ChatSession, SystemPrompt, utcnow


def system_prompts(db: Session, *, chat: ChatSession) -> list[SystemPrompt]:
    """Every system prompt the session has had, by the turn it applies from."""
    return list(db.scalars(select(SystemPrompt).where(SystemPrompt.session_id == chat.id)
                           .order_by(SystemPrompt.from_turn)))


def system_prompt_at(db: Session, *, chat: ChatSession, turn: int) -> str | None:
    """The system prompt turn `turn` is generated with; None for the template's default."""
    row = db.scalars(select(SystemPrompt).where(SystemPrompt.session_id == chat.id, SystemPrompt.from_turn <= turn)
                     .order_by(SystemPrompt.from_turn.desc()).limit(1)).first()
    return (row.text or None) if row is not None else None


def set_system_prompt(db: Session, *, chat: ChatSession, from_turn: int, text: str) -> SystemPrompt:
    """Record `text` ("" clears it) as the prompt from turn from_turn on; flushes, never commits."""
    row = db.scalars(select(SystemPrompt).where(SystemPrompt.session_id == chat.id,
                                                SystemPrompt.from_turn == from_turn)).first()
    if row is None:
        row = SystemPrompt(session_id=chat.id, from_turn=from_turn, text=text, created_at=utcnow())
        db.add(row)
    else:
        row.text = text
    db.flush()
    return row


def set_recall(db: Session, *, chat: ChatSession, recall: int) -> None:
    db.execute(update(ChatSession).where(ChatSession.id == chat.id).values(recall=recall)
               .execution_options(synchronize_session=False))
    set_committed_value(chat, "recall", recall)
