"""Memory modes: what a session's memory puts in front of a question.

Every mode answers through the same turn loop (Engine.run_turn): it only
decides which engram is injected and which text goes before the question.

A mode *kind* is one of KINDS. The engram kinds (engram, foreign,
engram+retrieval) depend on the recipe that wrote the engram, so a run over
several recipes has one row per kind and recipe, named `kind:recipe`
(`engram:seed`, `foreign:select-deep`; engram+retrieval only for the recipes
chosen, `retrieval_choice`); the text kinds (none, transcript, recent,
retrieval) hold no engram and are one row each (`mode_rows`).

    mode.prompt(memory, question, foreign) -> Prompt(engram, context)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from companion.engine.retrieval import (format_turns,  # noqa: F401  (re-exported: the harness imports them here)
                                        recall, with_context)


@dataclass
class Memory:
    """What one lived session holds: its text log and its rolling engram."""

    turns: list[tuple[str, str]] = field(default_factory=list)  # (user, reply) in order
    engram: torch.Tensor | None = None


@dataclass(frozen=True)
class Prompt:
    engram: torch.Tensor | None  # injected as the prefix (None: no prefix)
    context: str | None  # text placed before the question in the user message


def _fit(turns: list[tuple[str, str]], budget_chars: int) -> list[tuple[str, str]]:
    """The most recent turns whose text fits the budget (the transcript truncated from the start)."""
    kept, used = [], 0
    for turn in reversed(turns):
        size = len(turn[0]) + len(turn[1]) + 20
        if used + size > budget_chars:
            break
        kept.append(turn)
        used += size
    return kept[::-1]


@dataclass(frozen=True)
class Mode:
    name: str
    build: Callable[[Memory, str, "Memory | None"], Prompt]
    uses_engram: bool = False

    def prompt(self, memory: Memory, question: str, foreign: Memory | None = None) -> Prompt:
        return self.build(memory, question, foreign)


def _retrieve(memory: Memory, question: str, k: int) -> str | None:
    # The same function as the product's `--recall K` (unbounded here, as the rows were measured).
    return recall(memory.turns, question, k).text


def make_modes(*, context_chars: int = 6000, recent_turns: int = 3, top_k: int = 3) -> dict[str, Mode]:
    """The standard modes. context_chars bounds text modes so they fit the window."""
    def engram(m, q, f):
        return Prompt(m.engram, None)

    def none(m, q, f):
        return Prompt(None, None)

    def foreign(m, q, f):
        if f is None or f.engram is None:
            raise ValueError("the foreign mode needs an unrelated session's engram")
        return Prompt(f.engram, None)

    def transcript(m, q, f):
        return Prompt(None, format_turns(_fit(m.turns, context_chars)) or None)

    def foreign_transcript(m, q, f):
        # The foreign engram's control in text: do the words of an unrelated session, in front
        # of a question they do not answer, make the model say what they hold?
        if f is None:
            raise ValueError("the foreign-transcript mode needs an unrelated session")
        return Prompt(None, format_turns(_fit(f.turns, context_chars)) or None)

    def recent(m, q, f):
        return Prompt(None, format_turns(_fit(m.turns[-recent_turns:], context_chars)) or None)

    def retrieval(m, q, f):
        return Prompt(None, _retrieve(m, q, top_k))

    def both(m, q, f):
        return Prompt(m.engram, _retrieve(m, q, top_k))

    modes = [Mode("engram", engram, True), Mode("none", none), Mode("foreign", foreign, True),
             Mode("transcript", transcript), Mode("recent", recent), Mode("retrieval", retrieval),
             Mode("engram+retrieval", both, True), Mode("foreign-transcript", foreign_transcript)]
    return {m.name: m for m in modes}


KINDS = tuple(make_modes())  # every kind, in report order
OPT_IN = ("foreign-transcript",)  # asked only when named (the intrusion control; not in older runs)
MODE_NAMES = tuple(k for k in KINDS if k not in OPT_IN)  # the kinds a run asks by default
ENGRAM_KINDS = frozenset(m.name for m in make_modes().values() if m.uses_engram)
ALIASES = {"seed-engram": "engram", "foreign-engram": "foreign"}  # the names before recipes had rows


@dataclass(frozen=True)
class Row:
    """One line of a report: a mode kind, and for the engram kinds the recipe whose engram it reads."""

    name: str  # "engram:seed", or the kind itself for a text kind ("transcript")
    kind: str
    recipe: str | None = None


def canonical_kinds(names) -> list[str]:
    """Mode kinds from names (old names such as seed-engram allowed), in the order given, no repeats."""
    out = []
    for n in names:
        kind = ALIASES.get(n, n)
        if kind not in KINDS:
            raise ValueError(f"unknown mode(s) {n}; choose from {', '.join(KINDS)} "
                             f"(or the old names {', '.join(ALIASES)})")
        if kind not in out:
            out.append(kind)
    return out


def recipe_list(names) -> list[str]:
    """Recipe names from a command line: 'all' means every registered recipe; no repeats."""
    from companion.engine.recipes import recipe_names

    known = recipe_names()
    out: list[str] = []
    for n in names:
        for r in (known if n == "all" else [n]):
            if r not in known:
                raise ValueError(f"unknown recipe {r!r}; choose from {', '.join(known)} or 'all'")
            if r not in out:
                out.append(r)
    if not out:
        raise ValueError("no recipe given")
    return out


def retrieval_choice(names, recipes: list[str]) -> list[str] | None:
    """The recipes a run asks through engram+retrieval, from a command line's names (None: not given,
    which means the product's default recipe if it is compared, else the first); None when that is
    every compared recipe (as before the choice existed).

    >>> retrieval_choice(None, ["seed", "select-sticky", "deep"])
    ['select-sticky']
    >>> retrieval_choice(None, ["seed", "deep"]), retrieval_choice(["all"], ["seed", "deep"])
    (['seed'], None)
    """
    from companion.engine.recipes import DEFAULT

    if names is None:
        chosen = [DEFAULT] if DEFAULT in recipes else list(recipes[:1])
    elif "all" in names:
        return None
    else:
        chosen = recipe_list(names)
        if missing := [r for r in chosen if r not in recipes]:
            raise ValueError(f"--retrieval-recipes {' '.join(missing)}: not among the compared recipes")
    return None if set(chosen) == set(recipes) else chosen


def mode_rows(kinds, recipes, *, retrieval_recipes=None) -> list[Row]:
    """The report rows of these kinds over these recipes, kinds in KINDS order, recipes as given.
    retrieval_recipes: the recipes that get an engram+retrieval row (None: every one).

    >>> [r.name for r in mode_rows(["engram", "engram+retrieval", "none"], ["seed", "deep"],
    ...                            retrieval_recipes=["deep"])]
    ['engram:seed', 'engram:deep', 'none', 'engram+retrieval:deep']
    """
    wanted = set(canonical_kinds(kinds))
    rows = []
    for kind in KINDS:
        if kind not in wanted:
            continue
        if kind not in ENGRAM_KINDS:
            rows.append(Row(kind, kind))
            continue
        mine = recipes if kind != "engram+retrieval" or retrieval_recipes is None else \
            [r for r in recipes if r in retrieval_recipes]
        rows += [Row(f"{kind}:{r}", kind, r) for r in mine]
    return rows


def engines_by_recipe(engines) -> dict:
    """{recipe name: Engine} from one Engine or a list of them (one per recipe, the first answers text modes)."""
    items = [engines] if hasattr(engines, "config") else list(engines.values() if isinstance(engines, dict)
                                                              else engines)
    out = {}
    for e in items:
        if out and e.lm is not next(iter(out.values())).lm:
            raise ValueError("every recipe's engine must share one loaded model")
        if e.config.recipe in out:
            raise ValueError(f"recipe {e.config.recipe!r} given twice")
        out[e.config.recipe] = e
    if not out:
        raise ValueError("no engine given")
    return out


def ask(engine, mode: Mode, memory: Memory, question: str, *, foreign: Memory | None = None,
        max_new_tokens: int = 24):
    """Answer `question` from `memory` through `mode`, via the normal turn.

    Returns the TurnResult; the caller decides whether the turn is kept
    (the harnesses never keep question turns, so asking does not change memory).
    """
    p = mode.prompt(memory, question, foreign)
    # update=False: a question turn is never kept, so building its engram would be wasted work.
    return engine.run_turn(p.engram, with_context(p.context, question), max_new_tokens=max_new_tokens,
                           repetition_penalty=1.0, update=False)
