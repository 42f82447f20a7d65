"""What a chat-completions request means for a stored session, given the history the client re-sends.

OpenAI clients send the whole conversation every time; Companion keeps only the
engram. The stored transcript decides what the request is (user and assistant
texts compared after stripping whitespace):

- the history equals the stored turns: the newest user message is a new turn;
- the history equals the stored turns but the last, and the newest user message
  is that last turn's: a "regenerate", so the last turn is made again
  (Companion.retry replaces it; no duplicate is ever stored);
- no history at all (a client that sends only the newest message): a new turn,
  the engram holds the rest;
- anything else (an edited or foreign history): refused (409) and nothing is
  stored, because the engram cannot unlearn what the client dropped; the message
  says to send only the newest message, or to fork the session where it differs.

Decided on the worker thread just before the turn runs, so turns queued ahead
of it on the same session are already stored.
"""

from __future__ import annotations

from memory_store import crud

from .openai_schema import ApiError


def plan(store, name: str, history: list[tuple[str, str]], text: str) -> str:
    """'say' (a new turn) or 'retry' (make the last stored turn again); ApiError 409 on a mismatch."""
    k = len(history)
    with store.session() as db:
        chat = crud.get_session(db, name=name)
        n = 0 if chat is None else chat.cycle
        if k == 0 and n != 1:
            return "say"  # only the regenerate of a first turn needs a look at the store
        rows = crud.turns(db, chat=chat) if chat is not None else []  # as many as the client sent
        stored = [(t.user_text.strip(), t.reply_text.strip()) for t in rows]
    if k == n and stored[:k] == history:
        return "say"
    if k == n - 1 and stored[:k] == history and stored[-1][0] == text:
        return "retry"
    if k == 0:
        return "say"
    at = next((i for i, (a, b) in enumerate(zip(history, stored)) if a != b), min(k, len(stored)))
    raise ApiError(409, f"the {k} exchanges sent differ from session {name!r}, which has {n} stored turns "
                        f"(first difference at turn {at + 1}); send only the newest message to go on from the "
                        f"stored memory, or fork the session after turn {at} (POST /api/sessions/{name}/fork) "
                        f"and send to the fork", param="messages", code="history_mismatch")
