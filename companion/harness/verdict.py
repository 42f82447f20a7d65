"""Which recipe new sessions should get, by the rule written in issue 9 (item 6).

A recipe replaces `seed` as the default only if, at k=1, its recall's Wilson
lower bound is above seed's upper bound; or, when both recall 0, its answer
NLL interval lies wholly below seed's (and recall is not worse). Among the
recipes that pass, the best recall at k=1 wins (ties: lower NLL).

    >>> r = {"engram:seed": {"1": {"correct": 0, "trials": 6, "low": 0.0, "high": 0.39}},
    ...      "engram:x": {"1": {"correct": 5, "trials": 6, "low": 0.44, "high": 0.97}}}
    >>> choose_default(r, {})[0]
    'x'
"""

from __future__ import annotations


def _passes(cell: dict, seed: dict, nll: dict | None, seed_nll: dict | None) -> tuple[bool, str]:
    if cell["low"] > seed["high"]:
        return True, f"recall {cell['correct']}/{cell['trials']} (lower bound {cell['low']:.2f} > seed's upper {seed['high']:.2f})"
    if cell["correct"] == 0 and seed["correct"] == 0 and nll and seed_nll and nll["high"] < seed_nll["low"]:
        return True, f"recall 0 like seed, answer NLL {nll['mean']:.2f} [{nll['low']:.2f}, {nll['high']:.2f}] below seed's"
    return False, (f"recall {cell['correct']}/{cell['trials']} [{cell['low']:.2f}, {cell['high']:.2f}] vs seed "
                   f"{seed['correct']}/{seed['trials']} [{seed['low']:.2f}, {seed['high']:.2f}]: not separated")


def choose_default(recall: dict, answer_nll: dict, k: str = "1") -> tuple[str, list[str]]:
    """(the recipe new sessions should get, one reason line per recipe)."""
    seed = recall["engram:seed"][k]
    seed_nll = answer_nll.get("engram:seed", {}).get(k)
    passing, lines = [], []
    for row, by_k in recall.items():
        if not row.startswith("engram:") or row == "engram:seed" or k not in by_k:
            continue
        name = row.split(":", 1)[1]
        nll = answer_nll.get(row, {}).get(k)
        ok, why = _passes(by_k[k], seed, nll, seed_nll)
        lines.append(f"{name}: {'passes' if ok else 'fails'}: {why}")
        if ok:
            passing.append((-by_k[k]["correct"] / by_k[k]["trials"], nll["mean"] if nll else 0.0, name))
    return (min(passing)[2] if passing else "seed"), lines
