"""`--recall K`: the K stored turns that best match a new input, in front of it.

The matching and the text are retrieval.recall and retrieval.with_context, the
same functions the harness's `retrieval` and `engram+retrieval` rows use; the
product adds only a character budget, so however long the session grows the
prompt stays bounded (the turns are re-indexed every turn, which costs text
scanning, not prompt tokens). The engram cycle is unchanged: the recalled text
is part of this turn's input, which the engram absorbs like any input.
"""

from __future__ import annotations

from companion.engine.retrieval import recall, with_context
from memory_store import crud

MAX_RECALL = 20
RECALL_CHARS = 2000  # about 500 tokens: room for 3 short exchanges whole, and a bound for 20


def check_recall(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_RECALL:
        raise ValueError(f"recall must be a whole number from 0 to {MAX_RECALL} (turns put in front of each "
                         f"input), not {k!r}")
    return k


def recalled_input(db, *, chat, text: str, k: int) -> tuple[str, list[int]]:
    """What the model reads for `text` in session `chat`, and which stored turns (by number) went in."""
    if chat is None or k <= 0:
        return text, []
    stored = crud.turns(db, chat=chat)
    found = recall([(t.user_text, t.reply_text) for t in stored], text, k, budget_chars=RECALL_CHARS)
    return with_context(found.text, text), [stored[i].index for i in found.turns]
