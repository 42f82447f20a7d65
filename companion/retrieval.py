"""BM25 over stored turn text: the retrieval baseline the engram must beat.

    >>> idx = BM25(["the cat sat on the mat", "dogs bark at night", "a cat and a dog"])
    >>> idx.top("which mat did the cat sit on", 1)
    [0]
"""

from __future__ import annotations

import math
import re
from collections import Counter

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
