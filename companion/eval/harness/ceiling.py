"""The oracle rows of the degradation harness: the format's ceiling at k=0.

For each trial's planted fact and each oracle reader, the N vectors are
optimised (LM frozen, companion.eval.harness.oracle) to make the model repeat the
fact's statement, then the question is asked with them. The rows join the
harness's `recall` and `answer_nll` maps as `oracle:<reader>`, filled at k=0
only (no rolling: nothing is recompressed). Records resume from DIR/oracle.jsonl.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import oracle as O
from .facts import facts_for
from .nll import mean_ci
from .scoring import wilson


def run_oracle(lm, *, trials: int, seed: int, out: str | Path, readers: list[str], steps: int, lr: float = 0.1,
               stop_below: float = 0.005, layer: int = 16, slots: int = 32, max_new_tokens: int = 16,
               on_record=lambda rec: None) -> list[dict]:
    """Every (reader, trial) record, running the ones not yet in DIR/oracle.jsonl."""
    log = Path(out) / "oracle.jsonl"
    settings = {"seed": seed, "steps": steps, "lr": lr, "stop_below": stop_below, "layer": layer, "slots": slots,
                "max_new_tokens": max_new_tokens}
    records = [json.loads(x) for x in log.read_text().splitlines() if x.strip()] if log.exists() else []
    records = [r for r in records if r.get("settings") == settings]  # other settings: run again
    done = {(r["reader"], r["trial"]) for r in records}
    engines, pools = {}, {}
    for trial in range(trials):
        fact, _ = facts_for(seed, trial)
        for reader in map(O.reader_name, readers):
            if (f"oracle:{reader}", trial) in done:
                continue
            if reader not in engines:
                engines[reader] = O.engine_for(lm, reader, layer=layer, slots=slots)
                pools[reader] = O.real_pool(engines[reader])
            rec = O.run_trial(engines[reader], fact, reader=reader, trial=trial, seed=seed, steps=steps, lr=lr,
                              stop_below=stop_below or None, max_new_tokens=max_new_tokens, pool=pools[reader])
            rec["settings"] = settings
            with log.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            records.append(rec)
            on_record(rec)
    wanted = {f"oracle:{O.reader_name(r)}" for r in readers}
    return [r for r in records if r["reader"] in wanted and r["trial"] < trials]


def merge_oracle(results: dict, records: list[dict]) -> dict:
    """Add oracle:<reader> rows (k=0 only; other k empty) to results' recall and answer_nll maps."""
    ks = list(next(iter(results["recall"].values())).keys())
    for reader in dict.fromkeys(r["reader"] for r in records):
        rs = [r for r in records if r["reader"] == reader]
        correct = sum(bool(r["correct"]) for r in rs)
        low, high = wilson(correct, len(rs))
        results["recall"][reader] = {k: {"correct": 0, "trials": 0, "low": 0.0, "high": 1.0} for k in ks}
        results["recall"][reader]["0"] = {"correct": correct, "trials": len(rs), "low": low, "high": high}
        per_token = [r["answer_nll"] / r["answer_tokens"] for r in rs if r["answer_tokens"]]
        results.setdefault("answer_nll", {})[reader] = {k: {} for k in ks}
        results["answer_nll"][reader]["0"] = mean_ci(per_token)
    results["oracle"] = {"records": len(records), "meaning": (
        "oracle:<reader>: per fact, the N vectors optimised with the LM frozen so the model repeats the fact's "
        "statement from them alone, then the question asked through that reader; k=0 only"),
        "settings": records[0]["settings"] if records else None}
    return results
