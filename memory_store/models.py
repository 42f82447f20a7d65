"""Tables: one row per named session, per committed turn, per saved engram, per system prompt, and per
forget (an edit of an engram's slots)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Named constraints let batch migrations on SQLite drop or alter them later;
# 0001_initial_schema.py spells out the same names.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Always hands back aware UTC datetimes; SQLite would otherwise return naive ones."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # Naive values only ever come from our own code paths, which mean UTC.
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ChatSession(Base):
    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    model_name: Mapped[str] = mapped_column(String(255), nullable=False)
    # The engram is only meaningful for the exact weights that produced it.
    model_fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    engram_config: Mapped[str] = mapped_column(Text, nullable=False, default="{}")
    # Committed turn count, doubling as the optimistic-concurrency version.
    cycle: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # How many stored turns BM25 puts in front of each new input (0: none); 0003_session_recall.py.
    recall: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")

    turns: Mapped[list[Turn]] = relationship(
        back_populates="chat",
        order_by="Turn.index",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    def __repr__(self) -> str:
        return f"ChatSession(name={self.name!r}, cycle={self.cycle})"


class Turn(Base):
    __tablename__ = "turns"
    __table_args__ = (UniqueConstraint("session_id", "index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True, nullable=False
    )
    index: Mapped[int] = mapped_column(Integer, nullable=False)
    user_text: Mapped[str] = mapped_column(Text, nullable=False)
    reply_text: Mapped[str] = mapped_column(Text, nullable=False)
    prompt_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    reply_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    transcript_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    gen_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    update_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)

    chat: Mapped[ChatSession] = relationship(back_populates="turns")
    engram: Mapped[Engram | None] = relationship(
        back_populates="turn",
        uselist=False,
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    def __repr__(self) -> str:
        return f"Turn(session_id={self.session_id}, index={self.index})"


class Engram(Base):
    __tablename__ = "engrams"
    __table_args__ = (UniqueConstraint("session_id", "cycle"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    turn_id: Mapped[int] = mapped_column(
        ForeignKey("turns.id", ondelete="CASCADE"), unique=True, nullable=False
    )
    # Denormalised so "latest engram of a session" needs no join.
    session_id: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True, nullable=False
    )
    cycle: Mapped[int] = mapped_column(Integer, nullable=False)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    dtype: Mapped[str] = mapped_column(String(16), nullable=False)
    shape: Mapped[str] = mapped_column(String(64), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    # Kept so stats can show something without decoding (or trusting) the blob.
    norm: Mapped[float] = mapped_column(Float, nullable=False)
    config: Mapped[str] = mapped_column(Text, nullable=False, default="{}")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    # Where each slot came from, as JSON: one [turn, position, token id, token text] per slot, or null
    # for a slot with no single source (an average). NULL: engrams from before 0004, or from an
    # averaging recipe. Display metadata, outside the checksum: a bad value shows as "source unknown".
    sources: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)

    turn: Mapped[Turn] = relationship(back_populates="engram")

    @property
    def shape_tuple(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.shape.split(",") if part)

    def __repr__(self) -> str:
        return f"Engram(session_id={self.session_id}, cycle={self.cycle}, shape={self.shape!r})"


class SystemPrompt(Base):
    """A session's system prompt from turn `from_turn` on, until a row with a later from_turn.

    Rows, not a column on the session: a prompt changed on resume must not
    rewrite which prompt the earlier turns were generated with.
    """

    __tablename__ = "system_prompts"
    __table_args__ = (UniqueConstraint("session_id", "from_turn"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True, nullable=False
    )
    from_turn: Mapped[int] = mapped_column(Integer, nullable=False)
    # "" records that the prompt was cleared (the model's template default applies again).
    text: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)

    def __repr__(self) -> str:
        return f"SystemPrompt(session_id={self.session_id}, from_turn={self.from_turn})"


class Forget(Base):
    """One `forget`: the slots taken out of the engram of `cycle` (which is rewritten in the same transaction).

    Kept so `show` can say what was forgotten and when; dropped with that turn by `undo`.
    """

    __tablename__ = "forgets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True, nullable=False
    )
    cycle: Mapped[int] = mapped_column(Integer, nullable=False)
    # What was asked: the text, or "turn N".
    asked: Mapped[str] = mapped_column(Text, nullable=False)
    # JSON list of the words taken out, each {"text", "turn", "slots"}.
    removed: Mapped[str] = mapped_column(Text, nullable=False)
    slots_before: Mapped[int] = mapped_column(Integer, nullable=False)
    slots_after: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)

    def __repr__(self) -> str:
        return f"Forget(session_id={self.session_id}, cycle={self.cycle}, asked={self.asked!r})"
