"""Benchmark: degradation-harness throughput, trials batched vs one session at a time.

    python scripts/bench_harness.py --batch 6 --out runs/bench_harness.json

Runs the quick profile twice in one process (one trial at a time, then the
trials lived side by side), checks both gave the same replies, prints the ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from companion import Engine, load_model
from companion.eval.benchmarks import recipe_config, recipe_options, write_json
from companion.eval.harness import DistractorPool, RunSettings, run
from companion.eval.harness.degradation import QUICK
from companion.app.settings import cache_dir


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trials", type=int, default=QUICK["trials"])
    p.add_argument("--batch", type=int, default=QUICK["trials"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    recipe_options(p)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    engine = Engine(load_model(args.model, cache_root=cache_dir()), recipe_config(args))
    settings = RunSettings(seed=args.seed, cycles=QUICK["cycles"])
    pool = DistractorPool.load()
    seconds, replies = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, batch in (("one-at-a-time", 1), (f"batch-{args.batch}", args.batch)):
            t0 = time.perf_counter()
            res = run(engine, settings, args.trials, Path(tmp) / label, pool=pool, progress=False, batch=batch)
            seconds[label] = time.perf_counter() - t0
            replies[label] = [a["reply"] for t in res["per_trial"] for pr in t["probes"] for a in pr["answers"].values()]
            print(f"{label:14} {seconds[label]:8.1f} s", file=sys.stderr)
    one, many = seconds["one-at-a-time"], seconds[f"batch-{args.batch}"]
    same = sum(a == b for a, b in zip(*replies.values())) / max(1, len(replies["one-at-a-time"]))
    r = {"recipe": engine.config.to_dict(), "trials": args.trials, "cycles": QUICK["cycles"], "batch": args.batch,
         "seconds": seconds, "speedup": one / many, "same_reply_fraction": same, "threads": torch.get_num_threads()}
    print(f"quick profile: one at a time {one:.1f} s, batched {many:.1f} s -> speedup {r['speedup']:.2f}x "
          f"(goal >= 4x); identical replies {same:.1%}")
    write_json(args.out, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
