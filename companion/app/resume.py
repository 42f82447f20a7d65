"""What a resumed chat shows first, and `/history`: where the conversation left off, in words.

    Resuming 'trip': 4 turns, created 3 days ago, last used yesterday
    model SmolLM2-135M-Instruct, recipe select-sticky (layer 16, 32 slots)
    last: you: Where should we stay in Kyoto?
          companion: A ryokan near Gion is a good choice, and ...
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from companion.engine.config import EngramConfig
from memory_store import crud
from memory_store.settings import system_prompt_at

from .dates import ago
from .errors import CompanionError

SHORT = 100  # characters of a shortened line: the gist of a turn, not the turn
DEFAULT_HISTORY = 5
MAX_HISTORY = 1000


@dataclass(frozen=True)
class Exchange:
    index: int
    user: str
    reply: str


def shorten(text: str, limit: int = SHORT) -> str:
    """One line, cut on a word boundary: shorten("a  b\\nc") == "a b c"."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 3]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut) + "..."


def _exchange_lines(e: Exchange, lead: str = "") -> list[str]:
    pad = " " * len(lead)
    return [f"{lead}#{e.index} you: {shorten(e.user)}", f"{pad}#{e.index} companion: {shorten(e.reply)}"]


def resume_header(store, name: str, *, now: datetime | None = None, system: str | None = None,
                  recall: int | None = None) -> str | None:
    """The header of a resumed session; None for a session that does not exist yet.

    system, recall: a --system ("" clears) or --recall given on this resume, announced when they
    change what the next turn gets.
    """
    with store.session() as db:
        chat = crud.get_session(db, name=crud.validate_session_name(name))
        if chat is None:
            return None
        last = crud.last_turn(db, chat=chat)
        stored = system_prompt_at(db, chat=chat, turn=chat.cycle + 1)
        recipe = EngramConfig.from_dict(json.loads(chat.engram_config)).describe()
        turns = f"{chat.cycle} turn{'' if chat.cycle == 1 else 's'}"
        lines = [f"Resuming {chat.name!r}: {turns}, created {ago(chat.created_at, now)}, "
                 f"last used {ago(chat.last_used_at, now)}",
                 f"model {chat.model_name}, recipe {recipe}"]
        if system is not None and (system or None) != stored:
            lines.append(f"system from turn {chat.cycle + 1}: {shorten(system) or '(cleared: the model default)'}")
        elif stored:
            lines.append(f"system: {shorten(stored)}")
        if recall is not None and recall != chat.recall:
            lines.append(f"recall from turn {chat.cycle + 1}: {recall} stored turns in front of each input")
        elif chat.recall:
            lines.append(f"recall: {chat.recall} stored turns in front of each input")
        if last is not None:
            lines += _exchange_lines(Exchange(last.index, last.user_text, last.reply_text), "last: ")
    return "\n".join(lines)


def history_count(arg: str) -> int:
    """/history's argument: empty for the default, else a whole number of exchanges."""
    if not arg:
        return DEFAULT_HISTORY
    try:
        n = int(arg)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_HISTORY:
        raise CompanionError(f"/history takes a number of exchanges from 1 to {MAX_HISTORY}, not {arg!r}")
    return n


def history(store, name: str, n: int) -> list[Exchange]:
    """The last n exchanges of a session, oldest first (none for a session not yet created)."""
    with store.session() as db:
        chat = crud.get_session(db, name=crud.validate_session_name(name))
        if chat is None:
            return []
        return [Exchange(t.index, t.user_text, t.reply_text) for t in crud.last_turns(db, chat=chat, n=n)]


def history_text(store, name: str, arg: str) -> str:
    items = history(store, name, history_count(arg))
    if not items:
        return "no turns yet"
    return "\n".join(line for e in items for line in _exchange_lines(e))
