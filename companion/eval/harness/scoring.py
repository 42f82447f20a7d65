"""Scoring short answers: normalised whole-word match, and Wilson intervals.

    >>> is_correct("Its name is Vornelk!", "vornelk")
    True
    >>> is_correct("Tomorrow, I think.", "Tom")
    False
    >>> [round(x, 3) for x in wilson(0, 10)]
    [0.0, 0.278]
"""

from __future__ import annotations

import math
import re

ARTICLES = frozenset({"a", "an", "the"})
_NON_WORD = re.compile(r"[^a-z0-9]+")
_DIGIT_GROUP = re.compile(r"(?<=\d)[,.](?=\d{3}\b)")


def normalise(text: str) -> str:
    """Lower-case, drop thousands separators, punctuation and articles, collapse spaces.

    normalise("The code is 4,817.") == "code is 4817"
    """
    text = _DIGIT_GROUP.sub("", text.lower())
    words = [w for w in _NON_WORD.sub(" ", text).split() if w not in ARTICLES]
    return " ".join(words)


def is_correct(reply: str, answer: str, aliases: tuple[str, ...] | list[str] = ()) -> bool:
    """True when the normalised answer, or any alias, occurs in the reply as whole words."""
    hay = f" {normalise(reply)} "
    for form in (answer, *aliases):
        needle = normalise(form)
        if needle and f" {needle} " in hay:
            return True
    return False


def wilson(correct: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); (0, 1) for no trials."""
    if trials <= 0:
        return 0.0, 1.0
    p = correct / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
