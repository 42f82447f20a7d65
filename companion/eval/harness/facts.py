"""Planted facts the model cannot know, generated from a seed.

A fact is stated once, as a user would ("I named my cactus Vornelk."), and
asked back later with different wording ("What is my cactus called?"). The
answers are invented words, four-digit numbers and dates, so a correct answer
can only come from the conversation, never from the model's prior knowledge.

    >>> import random
    >>> f = make_fact(random.Random(0))
    >>> f.answer.lower() in f.question.lower()
    False
"""

from __future__ import annotations

import random

from companion.corpora.facts import ANIMALS, MONTHS, Fact, date, invented_name, invented_word, leaks, number
from companion.training.facts import make_train_fact

# Each template: (name, statement, question, answer kind). {x} is the answer slot;
# {animal} is context that may appear in both statement and question.
TEMPLATES: list[tuple[str, str, str, str]] = [
    ("pet-name", "I just adopted a {animal} and I named it {x}.", "What did I call my new {animal}?", "name"),
    ("village", "I grew up in a tiny village called {x}, up in the hills.",
     "Which village did I say I spent my childhood in?", "name"),
    ("locker-code", "The combination for my gym locker is {x}, I keep forgetting it.",
     "Remind me, which number opens my locker at the gym?", "number"),
    ("family-word", "In my family we say '{x}' when something is wonderfully cozy.",
     "What word does my family use for cozy things?", "word"),
    ("best-friend", "My best friend is called {x} and she keeps a lighthouse.",
     "Who is my friend that works at the lighthouse?", "name"),
    ("dentist", "My dentist appointment is on {x}, I really need to go.",
     "When is my appointment with the dentist?", "date"),
    ("grandma-dish", "My grandmother's famous dish is a stew called {x}.",
     "What is the name of the stew my grandma is known for?", "word"),
    ("boat", "I finally bought a little sailboat and named it the {x}.",
     "What name did I give my boat?", "name"),
    ("street", "I just moved to a flat on {x} Street.", "Which street is my new flat on?", "name"),
    ("startup", "I started a new job at a startup called {x}.",
     "What's the company I joined recently?", "name"),
    ("nickname", "Everyone at work calls me {x} for some reason.",
     "What nickname do my colleagues use for me?", "name"),
    ("cactus", "I named my cactus {x}, it sits by the window.", "What is my cactus called?", "name"),
    ("birthday", "My brother's birthday is on {x}.", "When does my brother celebrate his birthday?", "date"),
    ("pin", "The PIN for the shed padlock is {x}.", "What's the code for the padlock on the shed?", "number"),
    ("band", "My cousin plays drums in a band named {x}.",
     "What is the name of my cousin's band?", "name"),
    ("game", "My kids invented a board game they call {x}.",
     "What do my children call the game they made up?", "word"),
    ("tortoise-age", "Our old tortoise turns {x} months old next week, we counted.",
     "How many months old will our tortoise be?", "number"),
    ("mountain", "Last summer I hiked up a mountain called {x}.",
     "Which mountain did I climb last summer?", "name"),
]

def make_fact(rng: random.Random, template: str | None = None, exclude: tuple[str, ...] = ()) -> Fact:
    """One fact from `rng`; `template` picks one by name, `exclude` names ones to avoid."""
    choices = [t for t in TEMPLATES if t[0] not in exclude and (template is None or t[0] == template)]
    if not choices:
        raise ValueError(f"no template left (template={template!r}, exclude={exclude!r})")
    name, statement, question, kind = rng.choice(choices)
    animal = rng.choice(ANIMALS)
    while True:  # redraw in the (rare) case an invented word collides with the question
        aliases: tuple[str, ...] = ()
        if kind == "name":
            answer = invented_name(rng)
        elif kind == "word":
            answer = invented_word(rng)
        elif kind == "number":
            answer = number(rng) if name != "tortoise-age" else str(rng.randint(301, 899))
        else:
            answer, aliases = date(rng)
        fact = Fact(name, statement.format(x=answer, animal=animal), question.format(animal=animal), answer, aliases)
        if not leaks(fact):
            return fact


FACT_SETS = ("harness", "dev")


def trial_fact(seed: int, trial: int, facts: str = "harness") -> Fact:
    """The fact planted in trial `trial` of a run seeded `seed`. facts: "harness" (the 18 templates
    here, what results report) or "dev" (the training templates, companion.training.facts: for
    tuning a recipe without looking at the facts it is reported on)."""
    rng = random.Random(f"fact:{seed}:{trial}")
    if facts == "harness":
        return make_fact(rng)
    if facts == "dev":
        from companion.training.facts import make_train_fact  # below the harness's facts: imported when asked

        return make_train_fact(rng, held_out=None)
    raise ValueError(f"unknown fact set {facts!r}; choose from {', '.join(FACT_SETS)}")


def foreign_trial(seed: int, trial: int, facts: str = "harness") -> int:
    """The trial whose own session is this trial's foreign one: the next whose fact has another template.

    A neighbour's session rather than one made up for the purpose, so a run that lives
    both trials side by side lives that session once (harness.lockstep).
    """
    template, j = trial_fact(seed, trial, facts).template, trial + 1
    while trial_fact(seed, j, facts).template == template:
        j += 1
    return j


def facts_for(seed: int, trial: int, facts: str = "harness") -> tuple[Fact, Fact]:
    """The planted fact of a trial and the different-template fact of its foreign session."""
    return trial_fact(seed, trial, facts), trial_fact(seed, foreign_trial(seed, trial, facts), facts)
