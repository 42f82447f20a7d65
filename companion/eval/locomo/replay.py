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

from companion.engine.cycle import chat_ids
from memory_store import crud

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


@dataclass
class _Progress:
    conv: Conversation
    name: str
    chat: object
    planned: list
    engram: object
    transcript: int
    done: int
    new: int = 0
    seconds: float = 0.0


def _open(engine, store, conv: Conversation) -> _Progress:
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
    if done != planned[:len(done)]:
        raise ReplayMismatchError(f"stored session {name!r} does not match {conv.conv_id}; delete it to replay")
    transcript = stored[-1].transcript_tokens if stored else 0
    return _Progress(conv, name, chat, planned, None if latest is None else latest[0], transcript, len(done))


def _commit(engine, store, p: _Progress, engram, seconds: float) -> None:
    user, reply = p.planned[p.done]
    tok = engine.tokenizer
    prompt_len = len(chat_ids(tok, user))
    turn_len = len(chat_ids(tok, user, reply)) + 1
    prompt = len(engine.place(p.engram, user).ids)  # the recipe's layout: slots, frame, input
    p.transcript += turn_len
    with store.session() as db, db.begin():
        crud.add_turn(db, chat=p.chat, expected_cycle=p.chat.cycle, user_text=user, reply_text=reply,
                      prompt_tokens=prompt, reply_tokens=turn_len - prompt_len - 1,
                      transcript_tokens=p.transcript, gen_seconds=0.0, update_seconds=seconds,
                      engram=engram, engram_config=engine.config.to_dict())
    p.engram, p.done, p.new, p.seconds = engram, p.done + 1, p.new + 1, p.seconds + seconds


def replay_recipes(engines: dict, store, convs: list[Conversation], *, batched: bool = True,
                   on_turn: Callable[[str, int, int], None] | None = None) -> dict[str, list[Replayed]]:
    """Replay several conversations under several recipes (name -> Engine, one model) side by side:
    turn k of every unfinished (recipe, conversation) in one absorb.absorb_rows call, which groups rows
    of every recipe by depth and length (equal to Engine.absorb per row to float tolerance);
    batched=False runs Engine.absorb one turn at a time. Each turn is committed as soon as it is absorbed."""
    from companion.batched.absorb import absorb_rows

    states = [(r, _open(engine, store, c)) for r, engine in engines.items() for c in convs]
    while active := [(r, p) for r, p in states if p.done < len(p.planned)]:
        t0 = time.perf_counter()
        if batched:
            got = absorb_rows([engines[r] for r, _ in active], [p.engram for _, p in active],
                              [p.planned[p.done] for _, p in active])
            engrams = [engram for engram, _states in got]
        else:
            engrams = [engines[r].absorb(p.engram, *p.planned[p.done]).engram for r, p in active]
        share = (time.perf_counter() - t0) / len(active)
        for (r, p), engram in zip(active, engrams):
            _commit(engines[r], store, p, engram, share)
            if on_turn is not None:
                on_turn(p.conv.conv_id, p.done, len(p.planned))
    return {r: [Replayed(p.conv.conv_id, p.name, Memory(turns=list(p.planned), engram=p.engram), p.new, p.seconds)
                for q, p in states if q == r] for r in engines}


def replay(engine, store, conv: Conversation, *,
           on_turn: Callable[[int, int], None] | None = None) -> Replayed:
    """The conversation's memory (text log and final engram) from the store, replaying what is missing
    one turn at a time with Engine.absorb, as a live session would."""
    hook = None if on_turn is None else (lambda _c, i, n: on_turn(i, n))
    return replay_recipes({"": engine}, store, [conv], batched=False, on_turn=hook)[""][0]
