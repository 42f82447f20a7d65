"""`/more`: continuing a reply that stopped at --max-new-tokens.

A continuation is a turn of its own: its input quotes the end of the last
reply and asks for the rest, and it is stored like any turn once it finishes.
The cut turn before it stays as it was stored (a finished turn whose reply is
short), so nothing half-finished is ever written, and the engram it left is
what the continuation starts from.
"""

from __future__ import annotations

TAIL_CHARS = 300  # enough of the cut reply to pick up the sentence, little enough to stay cheap


def continuation_prompt(reply: str) -> str:
    tail = reply[-TAIL_CHARS:].strip()
    if len(reply.strip()) > TAIL_CHARS:
        tail = "..." + tail
    return f'Your last reply was cut off. It ended: "{tail}"\nContinue it from exactly there, without repeating it.'


def cut_notice(reply_tokens: int, how: str = "/more") -> str:
    return f"[cut at {reply_tokens} tokens: {how} continues]"
