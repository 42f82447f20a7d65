"""Summing trials up: recall, answer NLL and engram diagnostics per mode row (or recipe) and k.

    aggregate(trials, rows, cycles) -> (recall, answer_nll, diagnostics)
        recall:      row -> k -> {correct, trials, low, high}   (Wilson 95% interval)
        answer_nll:  row -> k -> {mean, sd, n, low, high}       (mean ± 1.96 sd / sqrt(n))
        diagnostics: recipe -> name -> k -> {mean, sd, n}
    intrusions(trials, rows, cycles) -> row -> k -> {correct, trials, low, high}
        how often a foreign-engram row's reply says the foreign session's own answer
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

from companion.engine import engram as E

from .nll import mean_ci
from .scoring import is_correct, wilson

DIAGNOSTICS_MEANING = {
    "cos_first": "cosine(engram after k distractors, engram after the fact turn), state part only; "
                 "null when the two hold different numbers of vectors",
    "cos_foreign": "cosine(engram, the unrelated session's engram of the same recipe at the same k)",
    "norm": "mean row norm of the (unscaled) engram's state part",
    "effective_rank": "exp entropy of the state part's singular values",
    "pos0_share_turn": "||h_0|| / sum_t ||h_t|| over the last lived turn's layer-L states as the recipe lays "
                       "it out (Engine.turn_states)",
    "pos0_share_slot0": "the same ratio within the first pooling chunk (the first engram slot)",
    "fact_slots_held": "how many of the slots holding the fact statement's own tokens are still in the engram "
                       "(token-keeping recipes; harness.held)"}


def code_version() -> str:
    """git describe of the checkout the package runs from, else the package version."""
    root = Path(__file__).resolve().parents[3]
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


def _mean_sd(xs: list[float]) -> dict:
    mean = sum(xs) / len(xs)
    sd = (sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0
    return {"mean": mean, "sd": sd, "n": len(xs)}


def aggregate(trials: list[dict], rows: list[str], cycles: list[int]) -> tuple[dict, dict, dict]:
    """See the module doc; rows are mode row names (engram:seed, transcript, ...)."""
    recall = {m: {str(k): {"correct": 0, "trials": 0} for k in cycles} for m in rows}
    nlls: dict[str, dict[str, list[float]]] = {m: {str(k): [] for k in cycles} for m in rows}
    values: dict[str, dict[str, dict[str, list[float]]]] = {}
    for t in trials:
        for p in t["probes"]:
            k = str(p["k"])
            for m, a in p["answers"].items():
                if m in recall and k in recall[m]:
                    recall[m][k]["correct"] += int(a["correct"])
                    recall[m][k]["trials"] += 1
                    if a.get("nll") is not None:
                        nlls[m][k].append(float(a["nll"]))
            for recipe, diag in p["diagnostics"].items():
                for name, v in diag.items():
                    if v is not None:
                        values.setdefault(recipe, {}).setdefault(name, {}).setdefault(k, []).append(float(v))
    for m in recall.values():
        for cell in m.values():
            cell["low"], cell["high"] = wilson(cell["correct"], cell["trials"])
    nll = {m: {k: mean_ci(xs) for k, xs in by_k.items()} for m, by_k in nlls.items()}
    diags = {recipe: {name: {k: _mean_sd(xs) for k, xs in by_k.items()} for name, by_k in names.items()}
             for recipe, names in values.items()}
    return recall, nll, diags


def intrusions(trials: list[dict], rows: list[str], cycles: list[int]) -> dict:
    """Per foreign row and k: replies that say the answer of the fact the foreign engram holds (and,
    in the foreign-transcript row, the foreign session's words: the same intrusion through text).

    The question asked there is about the trial's own fact, which that engram never saw, so its
    own answer has nothing to do in the reply: an engram that pushes what it holds into unrelated
    replies scores high (a first trained map said the other session's name 55 times in 60), one that
    stays quiet when it is not asked about scores 0. No memory is the floor (0 by construction).
    """
    counts = {m: {str(k): {"correct": 0, "trials": 0} for k in cycles} for m in rows
              if m.startswith("foreign:") or m == "foreign-transcript"}
    for t in trials:
        other = t.get("foreign_fact")
        if not other:
            continue
        for p in t["probes"]:
            k = str(p["k"])
            for m, a in p["answers"].items():
                if m in counts and k in counts[m]:
                    counts[m][k]["correct"] += int(is_correct(a["reply"], other["answer"], other.get("aliases", ())))
                    counts[m][k]["trials"] += 1
    for m in counts.values():
        for cell in m.values():
            cell["low"], cell["high"] = wilson(cell["correct"], cell["trials"])
    return counts
