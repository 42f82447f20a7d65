"""Several facts in one conversation, and a question about one never told.

The degradation harness plants one fact per session. A person tells several
things over a conversation and asks about any of them later; a memory that
keeps one by evicting the others is not much of a memory. Here one trial lives
a `turns`-turn conversation (LoCoMo distractor turns) into which F facts of
different harness templates are said at spread-out turns, then at its end asks
each fact's question from the final memory (asking is never kept, so each
question sees the same engram: a fork per question), and one question of a
template never told whose answer is of a kind that was told ("What is my
sister's name?" when only a cactus was named). The score is how many of F
facts a row recalls; an intrusion is a reply to the never-told question that
states one of the told answers: the engram speaking in the lived session
itself, which the foreign-engram count does not see.

    records = [live(engines, settings, pool, i) for i in range(trials)]
    summary = summarise(records, rows)
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from companion.corpora.conversations import DistractorPool
from companion.engine.cycle import InputTooLongError

from ..modes import Memory, ask, engines_by_recipe, make_modes
from .facts import TEMPLATES, make_fact
from .scoring import is_correct
from .trial import ACK

ROW_KINDS = ("engram", "none", "transcript", "retrieval")


@dataclass(frozen=True)
class SeveralSettings:
    seed: int = 0
    facts: int = 5
    turns: int = 40  # the whole conversation, facts included; questions come after its last turn
    max_new_tokens: int = 16
    context_chars: int = 6000

    def positions(self) -> list[int]:
        """The turns (0-based) at which the facts are said: spread evenly, the first at turn 0.

        >>> SeveralSettings(facts=5, turns=40).positions()
        [0, 8, 16, 24, 32]
        """
        return [math.floor(j * self.turns / self.facts) for j in range(self.facts)]


def plan(settings: SeveralSettings, index: int, pool: DistractorPool):
    """Trial `index`'s facts (distinct templates), its never-told question's fact and its turns."""
    rng = random.Random(f"several:{settings.seed}:{index}")
    told = []
    for _ in range(settings.facts):
        told.append(make_fact(rng, exclude=tuple(f.template for f in told)))
    kinds = {t[0]: t[3] for t in TEMPLATES}
    same_kind = [name for name, kind in kinds.items() if kind in {kinds[f.template] for f in told}
                 and name not in {f.template for f in told}]
    absent = make_fact(rng, template=rng.choice(same_kind))
    talk = pool.draw(rng, settings.turns - settings.facts)
    turns, at = [], set(settings.positions())
    facts = iter(told)
    for i in range(settings.turns):
        turns.append((next(facts).statement, ACK) if i in at else talk.pop(0))
    return told, absent, turns


def rows_for(recipes: list[str]) -> list[tuple[str, str | None]]:
    """(row name, recipe) for each engram recipe, then the text rows (answered by the first recipe's engine)."""
    return [(f"engram:{r}", r) for r in recipes] + [(k, None) for k in ROW_KINDS[1:]]


def live(engines, settings: SeveralSettings, pool: DistractorPool, index: int) -> dict:
    """One trial: the conversation lived once per recipe, then every question asked of every row."""
    engines = engines_by_recipe(engines)
    recipes = list(engines)
    told, absent, turns = plan(settings, index, pool)
    first = engines[recipes[0]]
    slots = max(e.config.slots for e in engines.values())
    budget = 3 * (first.lm.context_window - slots - settings.max_new_tokens - 160)
    modes = make_modes(context_chars=max(200, min(settings.context_chars, budget)))
    mems = {}
    for r, engine in engines.items():
        m = Memory()
        for user, reply in turns:
            m.engram = engine.absorb(m.engram, user, reply).engram
            m.turns.append((user, reply))
        mems[r] = m
    answers = {}
    for name, recipe in rows_for(recipes):
        engine, mem = engines[recipe or recipes[0]], mems[recipe or recipes[0]]
        mode = modes["engram" if recipe else name]
        got = []
        for fact in [*told, absent]:
            try:
                reply = ask(engine, mode, mem, fact.question, max_new_tokens=settings.max_new_tokens).reply
            except InputTooLongError:
                reply = ""
            got.append(reply)
        *facts_replies, absent_reply = got
        answers[name] = {
            "correct": [is_correct(rep, f.answer, f.aliases) for rep, f in zip(facts_replies, told)],
            "replies": facts_replies, "absent_reply": absent_reply,
            "intrusion": any(is_correct(absent_reply, f.answer, f.aliases) for f in told),
        }
    return {"trial": index, "facts": [f.to_dict() for f in told], "positions": settings.positions(),
            "absent": absent.to_dict(), "answers": answers}


def summarise(records: list[dict], rows: list[str]) -> dict:
    """Per row: facts recalled per trial (mean, and its 95% normal interval), recall by position, intrusions."""
    out = {}
    for row in rows:
        per_trial = [sum(r["answers"][row]["correct"]) for r in records]
        n = len(per_trial)
        mean = sum(per_trial) / n if n else 0.0
        sd = (sum((x - mean) ** 2 for x in per_trial) / (n - 1)) ** 0.5 if n > 1 else 0.0
        half = 1.96 * sd / n ** 0.5 if n else 0.0
        by_position = [sum(r["answers"][row]["correct"][j] for r in records) for j in range(len(records[0]["facts"]))]
        out[row] = {"mean": round(mean, 3), "interval": [round(mean - half, 3), round(mean + half, 3)],
                    "per_trial": per_trial, "by_position": by_position,
                    "intrusions": sum(r["answers"][row]["intrusion"] for r in records), "trials": n}
    return out


def table(summary: dict, settings: SeveralSettings) -> str:
    head = (f"| row | facts recalled of {settings.facts}, mean [95%] | by position "
            f"(turns {', '.join(str(p + 1) for p in settings.positions())}) | never-told question answered "
            "with a told fact |\n| --- | --- | --- | --- |")
    lines = [head]
    for row, s in summary.items():
        lines.append(f"| {row} | {s['mean']:.2f} [{s['interval'][0]:.2f}, {s['interval'][1]:.2f}] | "
                     f"{', '.join(str(x) for x in s['by_position'])} of {s['trials']} | {s['intrusions']}/{s['trials']} |")
    return "\n".join(lines)
