"""Which recipe new sessions should get: issue 9's rule (item 6), with an intrusion guard.

A recipe replaces the reigning one (`base`: `seed` when the rule was written,
the product's default since) only if, at k=1, its recall's Wilson lower bound
is above the base's upper bound; or, when both recall 0, its answer NLL
interval lies wholly below the base's (and recall is not worse). Among the
recipes that pass, the best recall at k=1 wins (ties: lower NLL).

The guard (added when a trained map passed the rule by recalling loudly): with
intrusion counts, a recipe whose foreign engram says its own answer to
questions about other facts clearly more often than the reference does (its
Wilson lower bound above the reference's upper bound) fails. The reference is
the foreign-transcript row when the run has it (the same foreign session's
words in front of the question), else the base's foreign row.

The chat guard (added when a quiet trained map passed both and still made
conversation worse): with `harm` (scripts/next_turn_nll.py's paired difference
to no memory per recipe), a recipe whose next-utterance NLL is clearly worse
than with no memory (the interval's lower end above 0) fails.

    >>> r = {"engram:seed": {"1": {"correct": 0, "trials": 6, "low": 0.0, "high": 0.39}},
    ...      "engram:x": {"1": {"correct": 5, "trials": 6, "low": 0.44, "high": 0.97}}}
    >>> choose_default(r, {})[0]
    'x'
    >>> loud = {"foreign:x": {"1": {"correct": 6, "trials": 6, "low": 0.61, "high": 1.0}},
    ...         "foreign-transcript": {"1": {"correct": 0, "trials": 6, "low": 0.0, "high": 0.39}}}
    >>> choose_default(r, {}, intrusions=loud)
    ('seed', ['x: fails: intrudes 6/6 [0.61, 1.00] vs foreign-transcript 0/6 [0.00, 0.39]'])
    >>> choose_default(r, {}, harm={"x": {"mean": 0.05, "low": 0.01, "high": 0.08}})
    ('seed', ['x: fails: harms chat: next-utterance NLL +0.050 [+0.010, +0.080] vs no memory'])
"""

from __future__ import annotations


def _passes(cell: dict, seed: dict, nll: dict | None, seed_nll: dict | None, base: str) -> tuple[bool, str]:
    if cell["low"] > seed["high"]:
        return True, f"recall {cell['correct']}/{cell['trials']} (lower bound {cell['low']:.2f} > {base}'s upper {seed['high']:.2f})"
    if cell["correct"] == 0 and seed["correct"] == 0 and nll and seed_nll and nll["high"] < seed_nll["low"]:
        return True, f"recall 0 like {base}, answer NLL {nll['mean']:.2f} [{nll['low']:.2f}, {nll['high']:.2f}] below {base}'s"
    return False, (f"recall {cell['correct']}/{cell['trials']} [{cell['low']:.2f}, {cell['high']:.2f}] vs {base} "
                   f"{seed['correct']}/{seed['trials']} [{seed['low']:.2f}, {seed['high']:.2f}]: not separated")


def _quiet_enough(name: str, intrusions: dict, base: str, k: str) -> tuple[bool, str]:
    ref_row = "foreign-transcript" if k in intrusions.get("foreign-transcript", {}) else f"foreign:{base}"
    mine, ref = intrusions.get(f"foreign:{name}", {}).get(k), intrusions.get(ref_row, {}).get(k)
    if not mine or not ref or not mine["trials"] or not ref["trials"]:
        return True, ""
    if mine["low"] > ref["high"]:
        return False, (f"intrudes {mine['correct']}/{mine['trials']} [{mine['low']:.2f}, {mine['high']:.2f}] vs "
                       f"{ref_row} {ref['correct']}/{ref['trials']} [{ref['low']:.2f}, {ref['high']:.2f}]")
    return True, ""


def _harmless(name: str, harm: dict) -> tuple[bool, str]:
    d = harm.get(name)
    if d and d["low"] > 0:
        return False, f"harms chat: next-utterance NLL {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] vs no memory"
    return True, ""


def choose_default(recall: dict, answer_nll: dict, k: str = "1", *, base: str = "seed",
                   intrusions: dict | None = None, harm: dict | None = None) -> tuple[str, list[str]]:
    """(the recipe new sessions should get, one reason line per other recipe)."""
    seed = recall[f"engram:{base}"][k]
    seed_nll = answer_nll.get(f"engram:{base}", {}).get(k)
    passing, lines = [], []
    for row, by_k in recall.items():
        if not row.startswith("engram:") or row == f"engram:{base}" or k not in by_k:
            continue
        name = row.split(":", 1)[1]
        nll = answer_nll.get(row, {}).get(k)
        ok, why = _passes(by_k[k], seed, nll, seed_nll, base)
        if ok and intrusions is not None:
            ok, loud = _quiet_enough(name, intrusions, base, k)
            why = loud or why
        if ok and harm is not None:
            ok, hurt = _harmless(name, harm)
            why = hurt or why
        lines.append(f"{name}: {'passes' if ok else 'fails'}: {why}")
        if ok:
            passing.append((-by_k[k]["correct"] / by_k[k]["trials"], nll["mean"] if nll else 0.0, name))
    return (min(passing)[2] if passing else base), lines


def verdict_lines(results: dict, k: str = "1", *, base: str | None = None, harm: dict | None = None) -> list[str]:
    """The rule's verdict on a degradation run, for its report: against `base` (default: the product's
    default when the run compares it, else seed), with the intrusion guard where the run counted
    intrusions and the chat guard where `harm` is given; [] when it cannot say."""
    from companion.engine.recipes.base import DEFAULT

    recall = results.get("recall", {})
    bases = (base,) if base else (DEFAULT, "seed")
    base = next((b for b in bases if k in recall.get(f"engram:{b}", {})), None)
    if base is None or sum(r.startswith("engram:") for r in recall) < 2:
        return []
    chosen, lines = choose_default(recall, results.get("answer_nll", {}), k, base=base,
                                   intrusions=results.get("intrusions") or None, harm=harm)
    guard = " with the chat guard" if harm is not None else ""
    return [f"The default by the rule at k={k} (companion/eval/harness/verdict.py{guard}), against {base}: **{chosen}**.",
            "", *[f"- {x}" for x in lines]]
