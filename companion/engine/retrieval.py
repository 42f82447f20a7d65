"""BM25 over stored turn text: the retrieval baseline the engram must beat, and `--recall`.

    >>> idx = BM25(["the cat sat on the mat", "dogs bark at night", "a cat and a dog"])
    >>> idx.top("which mat did the cat sit on", 1)
    [0]
    >>> recall([("my cat is Tom", "nice"), ("it rained", "sorry")], "what is my cat called?", 3).turns
    [0]

`recall` is the one implementation behind both the harness's retrieval modes
(companion/eval/modes.py) and the product's `--recall K` (companion/app/service.py),
and `with_context` the one framing of recalled text in front of a new input.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

_WORD = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset(
    "a an and are as at be but by did do does for from had has have he her his how i in is it its me my "
    "of on or our she so that the their them they this to was we were what when where which who why will "
    "with you your".split()
)


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens without stopwords. tokenize("The Cat's mat") == ['cat', 's', 'mat']"""
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


class BM25:
    """Okapi BM25 (k1=1.5, b=0.75) over a fixed list of documents."""

    def __init__(self, docs: list[str], k1: float = 1.5, b: float = 0.75):
        self.k1, self.b = k1, b
        self.tfs = [Counter(tokenize(d)) for d in docs]
        self.lens = [sum(tf.values()) for tf in self.tfs]
        self.avg = (sum(self.lens) / len(self.lens)) if self.lens else 0.0
        df = Counter(w for tf in self.tfs for w in tf)
        n = len(docs)
        self.idf = {w: math.log(1 + (n - c + 0.5) / (c + 0.5)) for w, c in df.items()}

    def scores(self, query: str) -> list[float]:
        q = tokenize(query)
        out = []
        for tf, length in zip(self.tfs, self.lens):
            s = 0.0
            for w in q:
                f = tf.get(w, 0)
                if f:
                    s += self.idf[w] * f * (self.k1 + 1) / (f + self.k1 * (1 - self.b + self.b * length / (self.avg or 1)))
            out.append(s)
        return out

    def top(self, query: str, k: int) -> list[int]:
        """Indices of the k best documents with a positive score, best first (ties: earlier first)."""
        scored = [(s, -i) for i, s in enumerate(self.scores(query)) if s > 0]
        return [-i for s, i in sorted(scored, reverse=True)[:k]]


def format_turns(turns: list[tuple[str, str]]) -> str:
    return "\n".join(f"User: {u}\nAssistant: {r}" for u, r in turns)


def with_context(context: str | None, question: str) -> str:
    """The user message for a question, with remembered text in front of it."""
    if not context:
        return question
    return f"Earlier in our conversation:\n{context}\n\nNow answer briefly: {question}"


@dataclass(frozen=True)
class Recalled:
    turns: list[int]  # indices into the stored turns, in conversation order
    text: str | None  # format_turns of them (clipped to the budget), None if nothing matched


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: max(0, n - 3)].rstrip() + "..."


def recall(turns: list[tuple[str, str]], query: str, k: int, *, budget_chars: int | None = None) -> Recalled:
    """The k stored (user, reply) turns BM25 ranks best for `query`, as text in conversation order.

    budget_chars bounds the text however long the turns are (the best turns are
    kept first, a turn that no longer fits whole is clipped, then nothing more);
    None leaves it unbounded, as the harness's rows were measured. While the
    budget is not reached both give the same text.
    """
    if not turns or k <= 0:
        return Recalled([], None)
    best = BM25([f"{u} {r}" for u, r in turns]).top(query, k)
    kept: dict[int, tuple[str, str]] = {}
    used = 0
    for i in best:
        user, reply = turns[i]
        if budget_chars is not None:
            room = budget_chars - used - len("User: \nAssistant: \n")
            if room < 40:  # less than a phrase would be left: stop rather than recall a fragment
                break
            if len(user) + len(reply) > room:  # share the room; a short side leaves the rest to the other
                user = _clip(user, max(room // 2, room - len(reply)))
                reply = _clip(reply, room - len(user))
        kept[i] = (user, reply)
        used += len(format_turns([(user, reply)])) + 1
    order = sorted(kept)
    return Recalled(order, format_turns([kept[i] for i in order]) or None)
