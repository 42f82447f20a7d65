"""Invented facts' parts: pronounceable non-words, names, numbers and dates no model can know.

Both the harness's templates (companion.eval.harness.facts) and training's own
(companion.training.facts) fill their answers from these, so the kind of answer
is alike while the sentences never are.

    >>> import random
    >>> invented_word(random.Random(0)).isalpha()
    True
    >>> leaks(Fact("t", "I named it Vornelk.", "What is Vornelk?", "Vornelk"))
    True
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field

_ONSETS = ["b", "br", "d", "dr", "f", "g", "gl", "k", "kr", "l", "m", "n", "p", "pl", "r", "s", "sk", "t",
           "th", "tr", "v", "z", "zh", "qu"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ei", "ou", "y"]
_CODAS = ["", "", "n", "r", "l", "th", "x", "sk", "m", "nd", "rk", "v"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
ANIMALS = ["kitten", "puppy", "parrot", "ferret", "rabbit", "hamster", "goldfish", "lizard"]


@dataclass(frozen=True)
class Fact:
    template: str  # which template produced it
    statement: str  # said once, in the first turn
    question: str  # asked back later, worded differently
    answer: str  # the canonical short answer
    aliases: tuple[str, ...] = field(default_factory=tuple)  # other accepted forms of the answer

    def to_dict(self) -> dict:
        d = asdict(self)
        d["aliases"] = list(self.aliases)
        return d


def invented_word(rng: random.Random, syllables: int | None = None) -> str:
    """A pronounceable non-word such as 'vornelk' (2-3 syllables)."""
    n = syllables or rng.choice([2, 2, 3])
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(n)]
    return "".join(parts) + rng.choice(_CODAS)


def invented_name(rng: random.Random) -> str:
    return invented_word(rng).capitalize()


def number(rng: random.Random) -> str:
    return str(rng.randint(1000, 9999))


def date(rng: random.Random) -> tuple[str, tuple[str, ...]]:
    month, day = rng.choice(MONTHS), rng.randint(2, 28)
    suffix = "th" if 11 <= day <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    m = month.lower()
    return f"{month} {day}", (f"{day} {m}", f"{m} {day}{suffix}", f"{day}{suffix} of {m}", f"{day}{suffix} {m}")


_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def leaks(fact: Fact) -> bool:
    """True when a word of the answer (or of an alias) appears in the question."""
    q = _words(fact.question)
    return any(_words(a) & q for a in (fact.answer, *fact.aliases))
