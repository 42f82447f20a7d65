"""The degradation-over-cycles harness: does a planted fact survive k more turns?

One trial lives ONE conversation: turn 1 states a fact the model cannot know,
then distractor turns follow. Every lived turn goes through Engine.absorb (the
same engram update as a live session; only the reply is scripted, so a turn is
one forward pass), once per recipe under test: each recipe has its own Engine
over the one loaded model and its own Memory. At each checkpoint k (k
distractor turns after the fact; k=0 is right after it) every mode row
(modes.mode_rows: engram:<recipe>, foreign:<recipe>, engram+retrieval:<recipe> of the chosen recipes,
and the recipe-free text modes) is asked the question through
companion.eval.modes.ask, and the teacher-forced NLL of the correct answer under the
same prompt is recorded (harness.nll); the question turn is never kept. An
unrelated session is lived alongside (the own session of the next trial whose
fact has another template: facts.foreign_trial): its engram of the same recipe
at the same k is the foreign engram.

Finished trials are appended to DIR/trials.jsonl, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from companion.corpora.conversations import DistractorPool

from ..modes import engines_by_recipe
from .reuse import load_reuse, read_trials
from .summary import code_version
from .trial import ACK, FULL, QUICK, HarnessError, RunSettings, Trial  # noqa: F401  (re-exported)

# Runs whose foreign twins were sessions of their own (before this key) differ in every foreign row,
# so their run.json lacks it and they are neither resumed nor reused by this code.
FOREIGN_SESSION = "the own session of the next trial whose fact has another template"


def _identity(engines: dict, settings: RunSettings, pool: DistractorPool) -> dict:
    lm = next(iter(engines.values())).lm
    return {"model": lm.name, "fingerprint": lm.fingerprint, "recipes": list(engines),
            "recipe_configs": {r: e.config.to_dict() for r, e in engines.items()},
            "distractors": pool.source, "settings": _settings(settings), "foreign_session": FOREIGN_SESSION}


def _settings(settings: RunSettings) -> dict:
    d = asdict(settings)
    for key, was in (("warmup", 0), ("retrieval_recipes", None), ("facts", "harness")):
        if d[key] == was:  # runs from before these options stay resumable and reusable
            del d[key]
    return d


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


def _parts(todo: list[int], engines: dict, settings: RunSettings, pool: DistractorPool, plan) -> list[tuple]:
    """(trial indices, engines, settings, reuse source or None): trials run in full, and trials the
    source holds (with the same text budget) where only the other recipes run."""
    if plan is None:
        return [(todo, engines, settings, None)]
    reused = [i for i in todo if i in plan.records
              and plan.records[i].get("context_chars") == Trial(engines, settings, pool, i).context_chars]
    full = [i for i in todo if i not in reused]
    return [p for p in ((full, engines, settings, None), (reused, *plan.fresh(engines, settings), plan)) if p[0]]


def run(engines, settings: RunSettings, trials: int, out: str | Path, *, pool: DistractorPool | None = None,
        profile: str = "custom", command: str | None = None, progress: bool = True, batch: int = 1,
        reuse: str | Path | None = None) -> dict:
    """Run (or resume) `trials` trials into `out`; returns the results dict also saved as results.json.

    engines: an Engine, or one Engine per recipe sharing one model (the first answers the text modes).
    batch > 1 lives that many trials side by side (companion.eval.harness.lockstep):
    the same turns and questions, one forward pass for all of them.
    reuse: a run folder of the same settings, model and distractors whose text-mode rows and
    same-config recipes' rows are taken as they are (companion.eval.harness.reuse).
    """
    from tqdm import tqdm

    from .lockstep import run_lockstep
    from .report import write_reports
    from .held import summarise
    from .summary import DIAGNOSTICS_MEANING, aggregate, intrusions

    engines = engines_by_recipe(engines)
    first = next(iter(engines.values()))
    out = Path(out)
    pool = pool or DistractorPool.load()
    identity = _identity(engines, settings, pool)
    _check_resume(out, identity)
    log = out / "trials.jsonl"
    done = read_trials(log)
    todo = [i for i in range(trials) if i not in done]
    rows = settings.rows(list(engines))
    plan = load_reuse(reuse, identity) if reuse is not None else None
    parts = _parts(todo, engines, settings, pool, plan)
    started = time.perf_counter()
    version = code_version()  # at the start: the code that ran, not whatever is checked out at the end
    with tqdm(total=sum(len(ids) * len(s.cycles) * len(s.rows(list(e))) for ids, e, s, _ in parts),
              desc="degradation", unit="ask", disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
        for ids, engs, sets, source in parts:
            for start in range(0, len(ids), max(1, batch)):
                group = ids[start:start + max(1, batch)]
                bar.set_postfix_str(f"trials {group[0] + 1}-{group[-1] + 1}/{trials}")
                if not engs or not sets.rows(list(engs)):  # everything is reused
                    records = [None] * len(group)
                elif len(group) == 1:
                    records = [Trial(engs, sets, pool, group[0]).run(on_ask=lambda: bar.update(1))]
                else:
                    records = run_lockstep([Trial(engs, sets, pool, i) for i in group], on_ask=lambda: bar.update(1))
                if source is not None:
                    records = [source.merge(source.records[i], r, rows, list(engines)) for i, r in zip(group, records)]
                for i, record in zip(group, records):
                    with log.open("a") as f:
                        f.write(json.dumps(record) + "\n")
                    done[i] = record
    kept = [done[i] for i in sorted(done) if i < trials]
    recall, nll, diags = aggregate(kept, [r.name for r in rows], settings.cycles)
    results = {
        **identity, "seed": settings.seed, "trials": len(kept), "profile": profile,
        "code_version": version, "command": command or " ".join(sys.argv),
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "device": str(first.lm.device)},
        "seconds_this_invocation": round(time.perf_counter() - started, 1), "resumed_trials": trials - len(todo),
        "protocol": ("turn 1 states the fact; k distractor turns follow; every lived turn goes through each "
                     "recipe's Engine.absorb (the live-session engram update, with a scripted reply: '" + ACK +
                     "' for the fact turn, the LoCoMo partner's line for distractors); the question is asked "
                     "through companion.eval.modes.ask with greedy decoding and is not kept"),
        "scoring": "normalised (lower-case, no punctuation or articles) answer or alias as whole words in the reply",
        "rows": {r.name: {"kind": r.kind, "recipe": r.recipe} for r in rows},
        "answer_nll_meaning": ("mean over trials of the per-token teacher-forced NLL (nats) of the correct answer "
                               "after the row's exact question prompt (Engine.answer_nll); low/high: "
                               "mean ± 1.96 sd / sqrt(n)"),
        "diagnostics_meaning": DIAGNOSTICS_MEANING,
        "intrusions_meaning": ("foreign rows: replies that say the answer of the fact the foreign engram holds "
                               "(the question is about another fact; lower is better)"),
        "recall": recall, "answer_nll": nll, "diagnostics": diags,
        "intrusions": intrusions(kept, [r.name for r in rows], settings.cycles),
        "fact_slots": {r: summarise([t.get("fact_slots", {}).get(r) for t in kept], max(settings.cycles))
                       for r in engines},
        "fact_slots_meaning": ("per recipe: the slots holding the fact statement's own tokens (not the template's or "
                               "the reply's), and per trial the k at which the last of them left the engram (None: "
                               "still held at the last k; harness.held)"),
        "per_trial": kept,
    }
    if plan is not None:
        results["reused"] = plan.summary()
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_reports(results, out)
    return results
