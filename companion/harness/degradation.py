"""The degradation-over-cycles harness: does a planted fact survive k more turns?

One trial lives ONE conversation: turn 1 states a fact the model cannot know,
then distractor turns follow. Every lived turn goes through Engine.absorb (the
same engram update as a live session; only the reply is scripted, so a turn is
one forward pass), once per recipe under test: each recipe has its own Engine
over the one loaded model and its own Memory. At each checkpoint k (k
distractor turns after the fact; k=0 is right after it) every mode row
(modes.mode_rows: engram:<recipe>, foreign:<recipe>, engram+retrieval:<recipe>,
and the recipe-free text modes) is asked the question through
companion.modes.ask, and the teacher-forced NLL of the correct answer under the
same prompt is recorded (harness.nll); the question turn is never kept. A
second, unrelated session (another fact, other distractors) is lived alongside:
its engram of the same recipe at the same k is the foreign engram.

Finished trials are appended to DIR/trials.jsonl, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .. import engram as E
from ..cycle import InputTooLongError
from ..modes import MODE_NAMES, Memory, Prompt, Row, ask, canonical_kinds, engines_by_recipe, make_modes, mode_rows
from ..modes import with_context
from ..recipes.writers import state_part
from .distractors import DistractorPool
from .facts import facts_for
from .nll import nll_one
from .scoring import is_correct
from .summary import code_version, first_position_share  # noqa: F401  (code_version: part of this module's API)

ACK = "Got it, I'll remember that."
QUICK = {"trials": 6, "cycles": [0, 1, 2, 5, 10, 20]}
FULL = {"trials": 20, "cycles": [0, 1, 2, 5, 10, 20, 50, 100]}


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

    def __post_init__(self):
        self.cycles = sorted(set(int(k) for k in self.cycles))
        if not self.cycles or self.cycles[0] < 0:
            raise HarnessError("cycles must be non-negative integers")
        try:
            self.modes = canonical_kinds(self.modes)  # old names (seed-engram) become kinds (engram)
        except ValueError as exc:
            raise HarnessError(str(exc)) from None


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
        import random
        self.engines = engines_by_recipe(engines)
        self.recipes = list(self.engines)
        self.engine = self.engines[self.recipes[0]]
        self.s, self.index = settings, index
        self.fact, self.foreign_fact = facts_for(settings.seed, index)
        rng = random.Random(f"distractors:{settings.seed}:{index}")
        n = max(settings.cycles)
        self.distractors, self.foreign_distractors = pool.draw(rng, n), pool.draw(rng, n)
        slots = max(e.config.slots for e in self.engines.values())
        budget = 3 * (self.engine.lm.context_window - slots - settings.max_new_tokens - 160)
        self.context_chars = max(200, min(settings.context_chars, budget))
        self.modes = make_modes(context_chars=self.context_chars, recent_turns=settings.recent_turns,
                                top_k=settings.top_k)
        self.rows = mode_rows(settings.modes, self.recipes)
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
        last = self._live(mem, self.fact.statement, ACK)
        self._live(foreign, self.foreign_fact.statement, ACK)
        first = {r: m.engram for r, m in mem.items()}
        checkpoints, kmax = set(self.s.cycles), max(self.s.cycles)
        probes = []
        for i in range(kmax + 1):
            if i in checkpoints:
                probes.append(self._probe(i, mem, foreign, first, last, on_ask))
            if i < kmax:
                last = self._live(mem, *self.distractors[i])
                self._live(foreign, *self.foreign_distractors[i])
        return self.record(probes)

    def record(self, probes: list[dict]) -> dict:
        return {"trial": self.index, "fact": self.fact.to_dict(), "foreign_fact": self.foreign_fact.to_dict(),
                "context_chars": self.context_chars, "probes": probes}

    def reused(self, key, answers: dict, name: str) -> bool:
        # Greedy decoding of an identical prompt gives an identical reply (e.g. 'none' at every k,
        # or 'recent' == 'transcript' while all turns fit), so it is asked once and reused.
        if key not in self._asked:
            return False
        where, first_answer = self._asked[key]
        answers[name] = {**first_answer, "seconds": 0.0, "same_prompt_as": where}
        return True

    def _probe(self, k, mem, foreign, first, last, on_ask) -> dict:
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
        return {"k": k, "answers": answers, "diagnostics": self.diagnostics(mem, foreign, first, last)}

    def diagnostics(self, mem: dict, foreign: dict, first: dict, last: dict) -> dict:
        """recipe -> the engram's diagnostics on its state part (salience columns left out)."""
        out = {}
        for r, engine in self.engines.items():
            cols = engine.writer.extra_columns
            e, e1, ef = (state_part(x, cols) for x in (mem[r].engram, first[r], foreign[r].engram))
            states = engine.turn_states(*last[r])  # the last lived turn again, for the position-0 share
            share_turn, share_slot = first_position_share(states, engine.config.slots)
            out[r] = {"cos_first": _cosine(e, e1), "cos_foreign": _cosine(e, ef), "norm": E.mean_row_norm(e),
                      "effective_rank": E.effective_rank(e), "pos0_share_turn": share_turn,
                      "pos0_share_slot0": share_slot}
        return out


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Flattened cosine; None when the engrams hold different numbers of vectors (a select
    recipe's engram fills up over the first turns)."""
    return E.cosine(a, b) if a.shape == b.shape else None


# -- the run: resume, aggregate, write -------------------------------------------------
def _read_trials(path: Path) -> dict[int, dict]:
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                t = json.loads(line)
                done[int(t["trial"])] = t
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by an interrupted write: that trial runs again
    return done


def _identity(engines: dict, settings: RunSettings, pool: DistractorPool) -> dict:
    lm = next(iter(engines.values())).lm
    return {"model": lm.name, "fingerprint": lm.fingerprint, "recipes": list(engines),
            "recipe_configs": {r: e.config.to_dict() for r, e in engines.items()},
            "distractors": pool.source, "settings": asdict(settings)}


def _check_resume(out: Path, identity: dict) -> None:
    path = out / "run.json"
    if not path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(identity, indent=2))
        return
    old = json.loads(path.read_text())
    if old != identity:
        keys = list(identity) + [k for k in old if k not in identity]
        diffs = [f"{k}: {old.get(k)!r} -> {identity.get(k)!r}" for k in keys if old.get(k) != identity.get(k)]
        raise HarnessError(f"{out} holds a run with different settings ({'; '.join(diffs)}); "
                           "use another --out folder or delete that one")


def run(engines, settings: RunSettings, trials: int, out: str | Path, *, pool: DistractorPool | None = None,
        profile: str = "custom", command: str | None = None, progress: bool = True, batch: int = 1) -> dict:
    """Run (or resume) `trials` trials into `out`; returns the results dict also saved as results.json.

    engines: an Engine, or one Engine per recipe sharing one model (the first answers the text modes).
    batch > 1 lives that many trials side by side (companion.harness.lockstep):
    the same turns and questions, one forward pass for all of them.
    """
    from tqdm import tqdm

    from .lockstep import run_lockstep
    from .report import write_reports
    from .summary import DIAGNOSTICS_MEANING, aggregate

    engines = engines_by_recipe(engines)
    first = next(iter(engines.values()))
    out = Path(out)
    pool = pool or DistractorPool.load()
    identity = _identity(engines, settings, pool)
    _check_resume(out, identity)
    log = out / "trials.jsonl"
    done = _read_trials(log)
    todo = [i for i in range(trials) if i not in done]
    rows = mode_rows(settings.modes, list(engines))
    started = time.perf_counter()
    with tqdm(total=len(todo) * len(settings.cycles) * len(rows), desc="degradation", unit="ask",
              disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
        for start in range(0, len(todo), max(1, batch)):
            group = todo[start:start + max(1, batch)]
            bar.set_postfix_str(f"trials {group[0] + 1}-{group[-1] + 1}/{trials}")
            made = [Trial(engines, settings, pool, i) for i in group]
            if len(made) == 1:
                records = [made[0].run(on_ask=lambda: bar.update(1))]
            else:
                records = run_lockstep(made, on_ask=lambda: bar.update(1))
            for i, record in zip(group, records):
                with log.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                done[i] = record
    kept = [done[i] for i in sorted(done) if i < trials]
    recall, nll, diags = aggregate(kept, [r.name for r in rows], settings.cycles)
    results = {
        **identity, "seed": settings.seed, "trials": len(kept), "profile": profile,
        "code_version": code_version(), "command": command or " ".join(sys.argv),
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "device": str(first.lm.device)},
        "seconds_this_invocation": round(time.perf_counter() - started, 1), "resumed_trials": trials - len(todo),
        "protocol": ("turn 1 states the fact; k distractor turns follow; every lived turn goes through each "
                     "recipe's Engine.absorb (the live-session engram update, with a scripted reply: '" + ACK +
                     "' for the fact turn, the LoCoMo partner's line for distractors); the question is asked "
                     "through companion.modes.ask with greedy decoding and is not kept"),
        "scoring": "normalised (lower-case, no punctuation or articles) answer or alias as whole words in the reply",
        "rows": {r.name: {"kind": r.kind, "recipe": r.recipe} for r in rows},
        "answer_nll_meaning": ("mean over trials of the per-token teacher-forced NLL (nats) of the correct answer "
                               "after the row's exact question prompt (Engine.answer_nll); low/high: "
                               "mean ± 1.96 sd / sqrt(n)"),
        "diagnostics_meaning": DIAGNOSTICS_MEANING,
        "recall": recall, "answer_nll": nll, "diagnostics": diags, "per_trial": kept,
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_reports(results, out)
    return results
