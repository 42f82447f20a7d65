"""Replaying a LoCoMo conversation into a stored Companion session, and reusing it.

Each (user, reply) turn of `Conversation.turns()` goes through the rolling
cycle with Engine.absorb (the reply is known, so one forward pass a turn) and
is committed to the store with crud.add_turn, exactly as a live session's turn
would be. The session is named after the conversation and a hash of the model
fingerprint, the recipe and the replay format, so a changed recipe never
reuses another recipe's engrams. A complete session is reused as it is; a
partial one resumes after its last committed turn.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from typing import Callable

from memory_store import crud

from ..cycle import chat_ids
from ..modes import Memory
from .data import Conversation

REPLAY_FORMAT = 1  # bump when Conversation.turns() renders text differently


class ReplayMismatchError(RuntimeError):
    """A stored session with this name holds different text than the conversation."""


@dataclass
class Replayed:
    conv_id: str
    session: str
    memory: Memory
    new_turns: int  # turns replayed by this call (0: the cache was used as it was)
    seconds: float  # spent replaying in this call


def replay_key(fingerprint: str, recipe_json: str) -> str:
    return hashlib.sha256(f"{fingerprint}|{recipe_json}|{REPLAY_FORMAT}".encode()).hexdigest()[:10]


def session_name(conv_id: str, key: str) -> str:
    return f"locomo-{re.sub(r'[^A-Za-z0-9._-]', '-', conv_id)[:40]}-{key}"


def replay(engine, store, conv: Conversation, *,
           on_turn: Callable[[int, int], None] | None = None) -> Replayed:
    """The conversation's memory (text log and final engram) from the store, replaying what is missing."""
    config = engine.config
    name = session_name(conv.conv_id, replay_key(engine.lm.fingerprint, config.to_json()))
    planned = conv.turns()
    with store.session() as db, db.begin():
        chat = crud.get_session(db, name=name)
        if chat is None:
            chat = crud.create_session(db, name=name, model_name=engine.lm.name,
                                       model_fingerprint=engine.lm.fingerprint, engram_config=config.to_dict())
        stored = crud.turns(db, chat=chat)
        latest = crud.latest_engram(db, chat=chat)
        done = [(t.user_text, t.reply_text) for t in stored]
        transcript = sum(t.reply_tokens + t.prompt_tokens for t in stored)
    if done != planned[:len(done)]:
        raise ReplayMismatchError(f"stored session {name!r} does not match {conv.conv_id}; delete it to replay")
    engram = None if latest is None else latest[0]
    t0, new = time.perf_counter(), 0
    for i in range(len(done), len(planned)):
        user, reply = planned[i]
        result = engine.absorb(engram, user, reply)
        transcript += len(chat_ids(engine.tokenizer, user, reply)) + 1
        with store.session() as db, db.begin():
            crud.add_turn(db, chat=chat, expected_cycle=chat.cycle, user_text=user, reply_text=reply,
                          prompt_tokens=result.prompt_tokens, reply_tokens=result.reply_tokens,
                          transcript_tokens=transcript, gen_seconds=result.gen_seconds,
                          update_seconds=result.update_seconds, engram=result.engram,
                          engram_config=config.to_dict())
        engram, new = result.engram, new + 1
        if on_turn is not None:
            on_turn(i + 1, len(planned))
    return Replayed(conv.conv_id, name, Memory(turns=list(planned), engram=engram), new,
                    time.perf_counter() - t0)
