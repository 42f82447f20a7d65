"""One trial of the degradation harness: a lived session per recipe plus its foreign twin.

The foreign twin is the own session of another trial (facts.foreign_trial: the
next one whose fact has another template), with its fact, distractors and
warm-up; lived here on its own, and shared with that trial by the lockstep runner.

Below both the one-at-a-time runner (degradation.py) and the lockstep runner
(lockstep.py), so neither imports the other.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass, field

import torch

from companion.corpora.conversations import DistractorPool
from companion.engine import engram as E
from companion.engine.cycle import InputTooLongError
from companion.engine.recipes.writers import state_part

from ..modes import (MODE_NAMES, Memory, Prompt, Row, ask, canonical_kinds, engines_by_recipe, make_modes, mode_rows,
                     with_context)
from .facts import FACT_SETS, facts_for, foreign_trial
from .held import FactSlots
from .nll import nll_one
from .scoring import is_correct
from .summary import first_position_share

ACK = "Got it, I'll remember that."
QUICK = {"trials": 6, "cycles": [0, 1, 2, 5, 10, 20]}
FULL = {"trials": 20, "cycles": [0, 1, 2, 5, 10, 20, 50, 100]}
# How long a fact is held: the quick profile's trials out to k = 100 (issue 23's long profile).
LONG = {"trials": 6, "cycles": [0, 1, 5, 20, 50, 100]}


class HarnessError(RuntimeError):
    """A run that cannot start, e.g. an out folder holding a run with other settings."""


@dataclass
class RunSettings:
    """Everything that changes the numbers; a resumed run must match it exactly."""

    seed: int = 0
    cycles: list[int] = field(default_factory=lambda: list(FULL["cycles"]))
    modes: list[str] = field(default_factory=lambda: list(MODE_NAMES))  # kinds; rows are kinds x recipes
    max_new_tokens: int = 16
    context_chars: int = 6000  # text-mode budget (about 1500 tokens), cut further to fit small windows
    recent_turns: int = 3
    top_k: int = 3
    nll: bool = True  # also record the teacher-forced NLL of the correct answer under each mode's prompt
    # Distractor turns lived before the fact (0: the fact opens the session). With a warm-up the fact
    # arrives when the engram is already full, as a fact told mid-conversation does.
    warmup: int = 0
    # The recipes asked through engram+retrieval (None: every recipe). Those rows hold the longest
    # prompts of a many-recipe comparison and none has moved a recipe off retrieval alone.
    retrieval_recipes: list[str] | None = None
    # Which planted facts: "harness" (what results report) or "dev" (the training templates, for
    # tuning a recipe without looking at the facts it is reported on; facts.trial_fact).
    facts: str = "harness"

    def rows(self, recipes) -> list[Row]:
        """The report rows of these settings over these recipes (modes.mode_rows)."""
        return mode_rows(self.modes, recipes, retrieval_recipes=self.retrieval_recipes)

    def __post_init__(self):
        self.cycles = sorted(set(int(k) for k in self.cycles))
        if not self.cycles or self.cycles[0] < 0:
            raise HarnessError("cycles must be non-negative integers")
        if self.warmup < 0:
            raise HarnessError("warmup must be a non-negative number of turns")
        if self.facts not in FACT_SETS:
            raise HarnessError(f"unknown fact set {self.facts!r}; choose from {', '.join(FACT_SETS)}")
        try:
            self.modes = canonical_kinds(self.modes)  # old names (seed-engram) become kinds (engram)
        except ValueError as exc:
            raise HarnessError(str(exc)) from None
        if "engram+retrieval" not in self.modes:
            self.retrieval_recipes = None


def _turns(settings: RunSettings, pool: DistractorPool, index: int) -> tuple[list, list]:
    """Trial `index`'s own distractor and warm-up turns."""
    rng = random.Random(f"distractors:{settings.seed}:{index}")
    n, w = max(settings.cycles), settings.warmup
    distractors = pool.draw(rng, n)
    # Once each trial drew turns for a foreign session of its own here; the draw stays so every
    # trial keeps the turns it had, and runs from before remain comparable on their own rows.
    pool.draw(rng, n)
    warmup = pool.draw(rng, w) if w else []  # drawn last, so runs without a warm-up keep their distractors
    return distractors, warmup


def _tensor_key(t: torch.Tensor | None) -> str | None:
    if t is None:
        return None
    return hashlib.sha256(t.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


class Trial:
    """One lived session plus its foreign twin, once per recipe; probes every mode row at each checkpoint.

    engines: one Engine per recipe (one loaded model); each recipe lives its own Memory of the same
    turns through its own Engine.absorb. The first engine answers the text modes (no engram).
    """

    def __init__(self, engines, settings: RunSettings, pool: DistractorPool, index: int):
        self.engines = engines_by_recipe(engines)
        self.recipes = list(self.engines)
        self.engine = self.engines[self.recipes[0]]
        self.s, self.index = settings, index
        self.fact, self.foreign_fact = facts_for(settings.seed, index, settings.facts)
        self.foreign_index = foreign_trial(settings.seed, index, settings.facts)
        self.distractors, self.warmup = _turns(settings, pool, index)
        self.foreign_distractors, self.foreign_warmup = _turns(settings, pool, self.foreign_index)
        slots = max(e.config.slots for e in self.engines.values())
        budget = 3 * (self.engine.lm.context_window - slots - settings.max_new_tokens - 160)
        self.context_chars = max(200, min(settings.context_chars, budget))
        self.modes = make_modes(context_chars=self.context_chars, recent_turns=settings.recent_turns,
                                top_k=settings.top_k)
        self.rows = settings.rows(self.recipes)
        self._asked: dict[tuple, tuple[str, dict]] = {}  # prompt key -> (where first asked, answer)

    def recipe_of(self, row: Row) -> str:
        return row.recipe or self.recipes[0]

    def prompt(self, row: Row, mem: dict, foreign: dict) -> tuple[Prompt, tuple]:
        """The row's prompt from its recipe's memories, and its key (same key: same reply and NLL)."""
        r = self.recipe_of(row)
        p = self.modes[row.kind].prompt(mem[r], self.fact.question, foreign[r])
        return p, (row.recipe, _tensor_key(p.engram), p.context)

    def _live(self, mems: dict, user: str, reply: str) -> dict:
        """One lived turn in every recipe's memory; returns each recipe's (previous engram, user, reply)."""
        lasts = {}
        for r, engine in self.engines.items():
            m = mems[r]
            lasts[r] = (m.engram, user, reply)
            m.engram = engine.absorb(m.engram, user, reply).engram
            m.turns.append((user, reply))
        return lasts

    def run(self, on_ask=lambda: None) -> dict:
        mem, foreign = {r: Memory() for r in self.recipes}, {r: Memory() for r in self.recipes}
        for own, other in zip(self.warmup, self.foreign_warmup):
            self._live(mem, *own)
            self._live(foreign, *other)
        last = self._live(mem, self.fact.statement, ACK)
        self._live(foreign, self.foreign_fact.statement, ACK)
        first = {r: m.engram for r, m in mem.items()}
        held = FactSlots(self.engines, {r: last[r][0] for r in self.recipes}, first, (self.fact.statement, ACK))
        checkpoints, kmax = set(self.s.cycles), max(self.s.cycles)
        probes = []
        for i in range(kmax + 1):
            if i in checkpoints:
                probes.append(self._probe(i, mem, foreign, first, last, on_ask, held))
            if i < kmax:
                last = self._live(mem, *self.distractors[i])
                self._live(foreign, *self.foreign_distractors[i])
                held.step(i + 1, {r: m.engram for r, m in mem.items()})
        return self.record(probes, held)

    def record(self, probes: list[dict], held: FactSlots | None = None) -> dict:
        out = {"trial": self.index, "fact": self.fact.to_dict(), "foreign_trial": self.foreign_index,
               "foreign_fact": self.foreign_fact.to_dict(),
               "context_chars": self.context_chars, "probes": probes}
        if held is not None:
            out["fact_slots"] = held.record()
        return out

    def reused(self, key, answers: dict, name: str) -> bool:
        # Greedy decoding of an identical prompt gives an identical reply (e.g. 'none' at every k,
        # or 'recent' == 'transcript' while all turns fit), so it is asked once and reused.
        if key not in self._asked:
            return False
        where, first_answer = self._asked[key]
        answers[name] = {**first_answer, "seconds": 0.0, "same_prompt_as": where}
        return True

    def _probe(self, k, mem, foreign, first, last, on_ask, held: FactSlots | None = None) -> dict:
        answers: dict = {}
        q = self.fact.question
        for row in self.rows:
            p, key = self.prompt(row, mem, foreign)
            if self.reused(key, answers, row.name):
                on_ask()
                continue
            r = self.recipe_of(row)
            engine = self.engines[r]
            t0 = time.perf_counter()
            try:
                res = ask(engine, self.modes[row.kind], mem[r], q, foreign=foreign[r],
                          max_new_tokens=self.s.max_new_tokens)
                reply, err, prompt_tokens = res.reply, None, res.prompt_tokens
            except InputTooLongError as exc:  # scored as wrong, and the error is kept
                reply, err, prompt_tokens = "", str(exc), None
            answers[row.name] = {"reply": reply, "correct": is_correct(reply, self.fact.answer, self.fact.aliases),
                                 "prompt_tokens": prompt_tokens, "seconds": round(time.perf_counter() - t0, 3)}
            if err:
                answers[row.name]["error"] = err
            if self.s.nll:
                answers[row.name].update(nll_one(engine, p.engram, with_context(p.context, q), self.fact.answer))
            self._asked[key] = (f"k={k}/{row.name}", answers[row.name])
            on_ask()
        return {"k": k, "answers": answers, "diagnostics": self.diagnostics(mem, foreign, first, last, held=held)}

    def diagnostics(self, mem: dict, foreign: dict, first: dict, last: dict | None = None,
                    shares: dict | None = None, held: FactSlots | None = None) -> dict:
        """recipe -> the engram's diagnostics on its state part (salience columns left out), and how
        many of the slots the fact's turn wrote are still held (held.FactSlots; token-keeping writers).

        shares: recipe -> the last lived turn's position-0 shares where the caller kept them from the
        lived pass; otherwise that turn (last: recipe -> previous engram, user, reply) runs again."""
        out = {}
        for r, engine in self.engines.items():
            cols = engine.writer.extra_columns
            e, e1, ef = (state_part(x, cols) for x in (mem[r].engram, first[r], foreign[r].engram))
            if shares is not None:
                share_turn, share_slot = shares[r]
            else:
                share_turn, share_slot = first_position_share(engine.turn_states(*last[r]), engine.config.slots)
            out[r] = {"cos_first": _cosine(e, e1), "cos_foreign": _cosine(e, ef), "norm": E.mean_row_norm(e),
                      "effective_rank": E.effective_rank(e), "pos0_share_turn": share_turn,
                      "pos0_share_slot0": share_slot}
            if held is not None and held.now.get(r) is not None:
                out[r]["fact_slots_held"] = held.now[r]
        return out


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Flattened cosine; None when the engrams hold different numbers of vectors (a select
    recipe's engram fills up over the first turns)."""
    return E.cosine(a, b) if a.shape == b.shape else None


# -- the run: resume, aggregate, write -------------------------------------------------
