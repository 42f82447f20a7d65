"""Planted facts for training only: templates of our own, none shared with the harness's.

The harness (companion.eval.harness.facts) measures recall on its 18 templates;
training must never see them, so these are other things a user might say
(other objects, other wording, other questions). The invented answers come
from the same generators, so the kind of answer is alike and the sentences are not.
`HELD_OUT` templates are kept out of training to watch generalisation to
unseen wording while training runs.

    >>> import random
    >>> f = make_train_fact(random.Random(1))
    >>> f.template in {t[0] for t in TRAIN_TEMPLATES}
    True
"""

from __future__ import annotations

import random

from companion.corpora.facts import MONTHS, Fact, invented_name, invented_word, leaks

TRAIN_TEMPLATES: list[tuple[str, str, str, str]] = [
    ("van", "I drive an old camper van that I call {x}.", "What do I call my van?", "name"),
    ("wifi", "Our wifi password at home is {x}, all lower case.", "What's the wifi password at my place?", "word"),
    ("piano-teacher", "My piano teacher is a patient man named {x}.", "Who teaches me piano?", "name"),
    ("employee-number", "My employee number at the hospital is {x}.", "What is my employee number?", "number"),
    ("wedding", "We are getting married on {x}, at last!", "When is our wedding?", "date"),
    ("novel", "I'm writing a fantasy novel titled {x}.", "What's the title of the book I'm writing?", "word"),
    ("river", "A river called the {x} runs behind my parents' house.",
     "What's the river near my parents' place called?", "name"),
    ("apartment", "I live in apartment {x} on the top floor.", "Which apartment number is mine?", "number"),
    ("bakery", "The bakery on my corner is called {x} and their rye is great.",
     "Which bakery is on my corner?", "name"),
    ("manager", "My new manager is a woman named {x}.", "What's my manager's name?", "name"),
    ("driving-test", "My driving test is scheduled for {x}.", "When do I take my driving test?", "date"),
    ("violin", "My violin is a hand-me-down I lovingly call {x}.", "How do I address my old violin?", "name"),
    ("bus", "I take the number {x} bus to the office every day.", "Which bus do I ride to work?", "number"),
    ("cafe", "My favourite cafe downtown is {x}.", "Which cafe downtown do I like best?", "name"),
    ("hotel", "For the holiday we booked a room at the Hotel {x}.", "Which hotel did we book for the holiday?",
     "name"),
    ("codename", "Our project at work has the codename {x}.", "What's the codename of my work project?", "word"),
    ("anniversary", "Our anniversary falls on {x} every year.", "On what date is our anniversary?", "date"),
    ("extension", "You can reach me at desk extension {x}.", "What is my desk phone extension?", "number"),
    ("vacuum", "We named our robot vacuum {x} because it bumps into everything.",
     "What do we call the robot vacuum?", "name"),
    ("school", "My daughter just started at a school called {x}.", "Which school does my daughter go to?", "name"),
    ("moving", "We move into the new house on {x}.", "When are we moving into the new house?", "date"),
    ("author", "My reading group is working through a novel by {x}.", "Which author is my reading group reading?",
     "name"),
    ("pony", "My niece rides a grumpy pony called {x}.", "Which pony does my niece ride?", "name"),
    ("room", "My office is room {x} in the east wing.", "Which room is my office in?", "number"),
]
HELD_OUT = ("author", "pony", "room", "moving")  # never trained on: a check on unseen wording
ACKS = ["Noted, thanks for telling me.", "Okay, good to know!", "Sounds good.", "Thanks, that's helpful to know."]


def _answer(rng: random.Random, kind: str) -> tuple[str, tuple[str, ...]]:
    if kind == "name":
        return invented_name(rng), ()
    if kind == "word":
        return invented_word(rng), ()
    if kind == "number":
        return str(rng.randint(100, 9999)), ()
    month, day = rng.choice(MONTHS), rng.randint(2, 28)
    return f"{month} {day}", (f"{day} {month.lower()}",)


def make_train_fact(rng: random.Random, *, held_out: bool | None = False, exclude: tuple[str, ...] = ()) -> Fact:
    """A training fact (held_out=True: one from HELD_OUT templates, for validation; None: any template)."""
    pool = [t for t in TRAIN_TEMPLATES
            if (held_out is None or (t[0] in HELD_OUT) == held_out) and t[0] not in exclude]
    name, statement, question, kind = rng.choice(pool)
    while True:
        answer, aliases = _answer(rng, kind)
        fact = Fact(name, statement.format(x=answer), question, answer, aliases)
        if not leaks(fact):
            return fact
