"""Seeing and correcting a session's memory: what its engram holds, forget, undo.

None of these needs the model: the engram's slots carry where they came from
(companion.engine.sources), so the memory can be shown as the words it holds
and a word can be taken out of it; undo goes back to the engram stored with
the turn before. Each change is one transaction guarded by the session's
cycle (memory_store.edits), so a kill leaves the session as it was or as it
is after the change, never in between.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch

from companion.engine.config import EngramConfig
from companion.engine.recipes import get_recipe
from companion.engine.sources import Word, forget_slots, parse_sources, sources_json, words
from memory_store import crud, edits
from memory_store.errors import CorruptEngramError, StaleSessionError

from .crashpoints import crash_point
from .errors import CompanionError


@dataclass(frozen=True)
class MemoryWord:
    text: str  # the word as said; "?" where the slot's source is unknown
    turn: int | None  # the turn it entered in
    score: float | None  # its retention score (the recipe's per-slot column), None for recipes without one
    slots: tuple[int, ...]


@dataclass(frozen=True)
class MemoryView:
    name: str
    recipe: str
    cycle: int
    slots: int  # rows the engram holds now
    capacity: int  # rows it can hold
    words: tuple[MemoryWord, ...] = ()
    averaged: bool = False  # an averaging recipe: slots are means of stretches of the turn, no words
    norms: tuple[float, ...] = ()  # per slot, shown for averaging recipes
    forgets: tuple[dict, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class ForgetReport:
    name: str
    cycle: int
    removed: tuple[MemoryWord, ...]
    slots_before: int
    slots_after: int


def _session(db, name: str):
    chat = crud.get_session(db, name=crud.validate_session_name(name))
    if chat is None:
        raise CompanionError(f"no session named {name!r}; `companion sessions` lists them")
    return chat


def _latest(db, chat):
    try:
        found = crud.latest_engram(db, chat=chat)
    except CorruptEngramError as exc:
        raise CompanionError(f"the memory of session {chat.name!r} cannot be read: {exc}") from exc
    if found is None or found[1].cycle != chat.cycle:
        raise CompanionError(f"session {chat.name!r} has no memory yet (no turns)" if chat.cycle == 0 else
                             f"session {chat.name!r} lacks the engram of its turn {chat.cycle}")
    return found


def _words(engram: torch.Tensor, sources, cols: int) -> tuple[MemoryWord, ...]:
    scores = engram[:, -1].tolist() if cols else None
    out = []
    for w in words(sources) if sources is not None else [Word("?", None, (i,)) for i in range(engram.shape[0])]:
        score = max(scores[i] for i in w.slots) if scores is not None else None
        out.append(MemoryWord(w.text, w.turn, score, w.slots))
    return tuple(out)


def memory_view(store, name: str) -> MemoryView:
    """What session `name`'s engram holds now, in slot order."""
    with store.session() as db:
        chat = _session(db, name)
        config = EngramConfig.from_dict(json.loads(chat.engram_config))
        listed = tuple({"cycle": f.cycle, "asked": f.asked, "removed": json.loads(f.removed),
                        "when": f.created_at.isoformat()} for f in edits.forgets(db, chat=chat))
        if chat.cycle == 0:
            return MemoryView(chat.name, config.recipe, 0, 0, config.slots, forgets=listed)
        engram, row = _latest(db, chat)
        writer = get_recipe(config.recipe).writer
        cols = writer.extra_columns
        if getattr(writer, "entering", None) is None:  # averaging: no slot has a single source
            norms = tuple(float(x) for x in engram[:, : engram.shape[1] - cols].float().norm(dim=1))
            return MemoryView(chat.name, config.recipe, chat.cycle, engram.shape[0], config.slots, averaged=True,
                              norms=norms, forgets=listed)
        sources = parse_sources(row.sources, engram.shape[0])
        return MemoryView(chat.name, config.recipe, chat.cycle, engram.shape[0], config.slots,
                          _words(engram, sources, cols), forgets=listed)


def forget(store, name: str, *, text: str | None = None, turn: int | None = None) -> ForgetReport:
    """Take the slots that came from `text`'s words (or from turn `turn`) out of the latest engram, as
    a new revision of it recorded in the forgets table. Refused in one line when nothing matches."""
    if text is not None and not text.strip():
        raise CompanionError("forget what? give the words to forget, or --turn N")
    asked = f"turn {turn}" if turn is not None else text.strip()
    with store.session() as db, db.begin():
        chat = _session(db, name)
        config = EngramConfig.from_dict(json.loads(chat.engram_config))
        if turn is not None and not 1 <= turn <= chat.cycle:
            raise CompanionError(f"session {chat.name!r} has turns 1..{chat.cycle}; there is no turn {turn}")
        engram, row = _latest(db, chat)
        writer = get_recipe(config.recipe).writer
        if getattr(writer, "entering", None) is None:
            raise CompanionError(f"session {chat.name!r} uses recipe {config.recipe!r}, whose slots are averages of "
                                 "whole stretches of a turn: no slot comes from one word, so none can be forgotten")
        sources = parse_sources(row.sources, engram.shape[0])
        if sources is None:
            raise CompanionError(f"the memory of session {chat.name!r} was written before slots kept their sources; "
                                 "nothing in it can be found by word (its next turns will be)")
        gone = forget_slots(sources, text=text.strip() if text is not None else None, turn=turn)
        if not gone:
            held = ", ".join(sorted({w.text for w in words(sources) if w.turn is not None})) or "nothing"
            raise CompanionError(f"nothing in session {chat.name!r}'s memory came from {asked!r}; it holds: {held}"
                                 if turn is None else f"no slot of session {chat.name!r}'s memory came from {asked}")
        drop = {i for w in gone for i in w.slots}
        keep = [i for i in range(engram.shape[0]) if i not in drop]
        removed = _words(engram, sources, writer.extra_columns)
        removed = tuple(w for w in removed if set(w.slots) <= drop)
        try:
            edits.rewrite_engram(db, chat=chat, row=row, engram=engram[keep].contiguous(),
                                 sources=sources_json([sources[i] for i in keep]), asked=asked,
                                 removed=[{"text": w.text, "turn": w.turn, "slots": len(w.slots)} for w in removed],
                                 slots_before=engram.shape[0])
        except StaleSessionError as exc:
            raise CompanionError(f"session {chat.name!r} moved on in another process; nothing was forgotten") from exc
        crash_point("forget-mid-commit")
    return ForgetReport(chat.name, chat.cycle, removed, engram.shape[0], len(keep))


def undo(store, name: str) -> tuple[int, str]:
    """Drop the session's last turn; it goes on from the engram stored with the turn before.
    Returns (the dropped turn's index, its user text)."""
    with store.session() as db, db.begin():
        chat = _session(db, name)
        if chat.cycle == 0:
            raise CompanionError(f"nothing to undo: session {chat.name!r} has no turns")
        try:
            turn = edits.drop_last_turn(db, chat=chat, expected_cycle=chat.cycle)
        except StaleSessionError as exc:
            raise CompanionError(f"session {chat.name!r} moved on in another process; nothing was undone") from exc
        crash_point("undo-mid-commit")
    return turn.index, turn.user_text
