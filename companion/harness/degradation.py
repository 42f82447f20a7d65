"""The degradation-over-cycles harness: does a planted fact survive k more turns?

One trial lives ONE conversation: turn 1 states a fact the model cannot know,
then distractor turns follow. Every lived turn goes through Engine.absorb (the
same engram update as a live session; only the reply is scripted, so a turn is
one forward pass). At each checkpoint k (k distractor turns after the fact;
k=0 is right after it) every memory mode is asked the question through
companion.modes.ask; the question turn is never kept. A second, unrelated
session (another fact, other distractors) is lived alongside: its engram at the
same k is the foreign engram, and the cross-session cosine.

Finished trials are appended to DIR/trials.jsonl, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .. import engram as E
from ..cycle import Engine, InputTooLongError
from ..modes import MODE_NAMES, Memory, ask, make_modes
from .distractors import DistractorPool
from .facts import facts_for
from .scoring import is_correct, wilson

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
    modes: list[str] = field(default_factory=lambda: list(MODE_NAMES))
    max_new_tokens: int = 16
    context_chars: int = 6000  # text-mode budget (about 1500 tokens), cut further to fit small windows
    recent_turns: int = 3
    top_k: int = 3

    def __post_init__(self):
        self.cycles = sorted(set(int(k) for k in self.cycles))
        if not self.cycles or self.cycles[0] < 0:
            raise HarnessError("cycles must be non-negative integers")
        unknown = [m for m in self.modes if m not in MODE_NAMES]
        if unknown:
            raise HarnessError(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODE_NAMES)}")


def code_version() -> str:
    """git describe of the checkout the package runs from, else the package version."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=root, capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return "git:" + out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version
    try:
        return "companion " + version("companion")
    except PackageNotFoundError:
        return "unknown"


def first_position_share(states: torch.Tensor, slots: int) -> tuple[float, float]:
    """How much position 0 weighs in a turn's layer-L states [T, H].

    Returns (||h_0|| / sum_t ||h_t|| over the whole turn,
             the same ratio within the first pooling chunk, i.e. the first engram slot).
    """
    norms = states.float().norm(dim=-1)
    a, b = E.chunk_bounds(states.shape[0], slots)[0]
    return float(norms[0] / norms.sum()), float(norms[0] / norms[a:b].sum())


def _tensor_key(t: torch.Tensor | None) -> str | None:
    if t is None:
        return None
    return hashlib.sha256(t.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


class Trial:
    """One lived session plus its foreign twin; probes every mode at each checkpoint."""

    def __init__(self, engine: Engine, settings: RunSettings, pool: DistractorPool, index: int):
        import random
        self.engine, self.s, self.index = engine, settings, index
        self.fact, self.foreign_fact = facts_for(settings.seed, index)
        rng = random.Random(f"distractors:{settings.seed}:{index}")
        n = max(settings.cycles)
        self.distractors, self.foreign_distractors = pool.draw(rng, n), pool.draw(rng, n)
        budget = 3 * (engine.lm.context_window - engine.config.slots - settings.max_new_tokens - 160)
        self.modes = make_modes(context_chars=max(200, min(settings.context_chars, budget)),
                                recent_turns=settings.recent_turns, top_k=settings.top_k)
        self.context_chars = max(200, min(settings.context_chars, budget))
        self._asked: dict[tuple, tuple[str, dict]] = {}  # prompt key -> (where first asked, answer)

    def _live(self, memory: Memory, user: str, reply: str):
        prev = memory.engram
        result = self.engine.absorb(prev, user, reply)
        memory.turns.append((user, reply))
        memory.engram = result.engram
        return prev, result.turn_ids

    def run(self, on_ask=lambda: None) -> dict:
        mem, foreign = Memory(), Memory()
        last = self._live(mem, self.fact.statement, ACK)
        self._live(foreign, self.foreign_fact.statement, ACK)
        first = mem.engram
        checkpoints, kmax = set(self.s.cycles), max(self.s.cycles)
        probes = []
        for i in range(kmax + 1):
            if i in checkpoints:
                probes.append(self._probe(i, mem, foreign, first, last, on_ask))
            if i < kmax:
                last = self._live(mem, *self.distractors[i])
                self._live(foreign, *self.foreign_distractors[i])
        return {"trial": self.index, "fact": self.fact.to_dict(), "foreign_fact": self.foreign_fact.to_dict(),
                "context_chars": self.context_chars, "probes": probes}

    def _probe(self, k, mem, foreign, first, last, on_ask) -> dict:
        answers = {}
        for name in self.s.modes:
            # Greedy decoding of an identical prompt gives an identical reply (e.g. 'none' at every k,
            # or 'recent' == 'transcript' while all turns fit), so it is asked once and reused.
            p = self.modes[name].prompt(mem, self.fact.question, foreign)
            key = (_tensor_key(p.engram), p.context)
            if key in self._asked:
                where, first_answer = self._asked[key]
                answers[name] = {**first_answer, "seconds": 0.0, "same_prompt_as": where}
                on_ask()
                continue
            t0 = time.perf_counter()
            try:
                r = ask(self.engine, self.modes[name], mem, self.fact.question, foreign=foreign,
                        max_new_tokens=self.s.max_new_tokens)
                reply, err, prompt_tokens = r.reply, None, r.prompt_tokens
            except InputTooLongError as exc:  # scored as wrong, and the error is kept
                reply, err, prompt_tokens = "", str(exc), None
            answers[name] = {"reply": reply, "correct": is_correct(reply, self.fact.answer, self.fact.aliases),
                             "prompt_tokens": prompt_tokens, "seconds": round(time.perf_counter() - t0, 3)}
            if err:
                answers[name]["error"] = err
            self._asked[key] = (f"k={k}/{name}", answers[name])
            on_ask()
        return {"k": k, "answers": answers, "diagnostics": self.diagnostics(mem, foreign, first, last)}

    def diagnostics(self, mem: Memory, foreign: Memory, first, last) -> dict:
        states = self.engine.states_of(*last)  # the last lived turn again, for the position-0 share
        share_turn, share_slot = first_position_share(states, self.engine.config.slots)
        return {"cos_first": E.cosine(mem.engram, first), "cos_foreign": E.cosine(mem.engram, foreign.engram),
                "norm": E.mean_row_norm(mem.engram), "effective_rank": E.effective_rank(mem.engram),
                "pos0_share_turn": share_turn, "pos0_share_slot0": share_slot}


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


def _identity(engine: Engine, settings: RunSettings, pool: DistractorPool) -> dict:
    return {"model": engine.lm.name, "fingerprint": engine.lm.fingerprint, "recipe": engine.config.to_dict(),
            "distractors": pool.source, "settings": asdict(settings)}


def _check_resume(out: Path, identity: dict) -> None:
    path = out / "run.json"
    if not path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(identity, indent=2))
        return
    old = json.loads(path.read_text())
    if old != identity:
        diffs = [f"{k}: {old.get(k)!r} -> {identity.get(k)!r}" for k in identity if old.get(k) != identity.get(k)]
        raise HarnessError(f"{out} holds a run with different settings ({'; '.join(diffs)}); "
                           "use another --out folder or delete that one")


def aggregate(trials: list[dict], modes: list[str], cycles: list[int]) -> tuple[dict, dict]:
    """recall: mode -> k -> {correct, trials, low, high}; diagnostics: name -> k -> {mean, sd, n}."""
    recall = {m: {str(k): {"correct": 0, "trials": 0} for k in cycles} for m in modes}
    values: dict[str, dict[str, list[float]]] = {}
    for t in trials:
        for p in t["probes"]:
            k = str(p["k"])
            for m, a in p["answers"].items():
                if m in recall and k in recall[m]:
                    recall[m][k]["correct"] += int(a["correct"])
                    recall[m][k]["trials"] += 1
            for name, v in p["diagnostics"].items():
                values.setdefault(name, {}).setdefault(k, []).append(float(v))
    for m in recall.values():
        for cell in m.values():
            cell["low"], cell["high"] = wilson(cell["correct"], cell["trials"])
    diags = {}
    for name, by_k in values.items():
        diags[name] = {}
        for k, xs in by_k.items():
            mean = sum(xs) / len(xs)
            sd = (sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0
            diags[name][k] = {"mean": mean, "sd": sd, "n": len(xs)}
    return recall, diags


def run(engine: Engine, settings: RunSettings, trials: int, out: str | Path, *, pool: DistractorPool | None = None,
        profile: str = "custom", command: str | None = None, progress: bool = True, batch: int = 1) -> dict:
    """Run (or resume) `trials` trials into `out`; returns the results dict also saved as results.json.

    batch > 1 lives that many trials side by side (companion.harness.lockstep):
    the same turns and questions, one forward pass for all of them.
    """
    from .lockstep import run_lockstep

    from tqdm import tqdm

    from .report import write_reports

    out = Path(out)
    pool = pool or DistractorPool.load()
    identity = _identity(engine, settings, pool)
    _check_resume(out, identity)
    log = out / "trials.jsonl"
    done = _read_trials(log)
    todo = [i for i in range(trials) if i not in done]
    per_trial = len(settings.cycles) * len(settings.modes)
    started = time.perf_counter()
    with tqdm(total=len(todo) * per_trial, desc="degradation", unit="ask", disable=not progress,
              file=sys.stderr, dynamic_ncols=True) as bar:
        for start in range(0, len(todo), max(1, batch)):
            group = todo[start:start + max(1, batch)]
            bar.set_postfix_str(f"trials {group[0] + 1}-{group[-1] + 1}/{trials}")
            made = [Trial(engine, settings, pool, i) for i in group]
            if len(made) == 1:
                records = [made[0].run(on_ask=lambda: bar.update(1))]
            else:
                records = run_lockstep(made, on_ask=lambda: bar.update(1))
            for i, record in zip(group, records):
                with log.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                done[i] = record
    kept = [done[i] for i in sorted(done) if i < trials]
    recall, diags = aggregate(kept, settings.modes, settings.cycles)
    results = {
        **identity, "seed": settings.seed, "trials": len(kept), "profile": profile,
        "code_version": code_version(), "command": command or " ".join(sys.argv),
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "device": str(engine.lm.device)},
        "seconds_this_invocation": round(time.perf_counter() - started, 1), "resumed_trials": trials - len(todo),
        "protocol": ("turn 1 states the fact; k distractor turns follow; every lived turn goes through "
                     "Engine.absorb (the live-session engram update, with a scripted reply: '" + ACK +
                     "' for the fact turn, the LoCoMo partner's line for distractors); the question is asked "
                     "through companion.modes.ask with greedy decoding and is not kept"),
        "scoring": "normalised (lower-case, no punctuation or articles) answer or alias as whole words in the reply",
        "diagnostics_meaning": {
            "cos_first": "cosine(engram after k distractors, engram after the fact turn)",
            "cos_foreign": "cosine(engram, the unrelated session's engram at the same k)",
            "norm": "mean row norm of the (unscaled) engram", "effective_rank": "exp entropy of singular values",
            "pos0_share_turn": "||h_0|| / sum_t ||h_t|| over the last lived turn's layer-L states",
            "pos0_share_slot0": "the same ratio within the first pooling chunk (the first engram slot)"},
        "recall": recall, "diagnostics": diags, "per_trial": kept,
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_reports(results, out)
    return results
