#!/usr/bin/env python
"""Which of a planted fact's tokens a recipe's engram still holds after k distractor turns.

    python scripts/research/trace_slots.py --recipes select-sticky select-words --trials 6 --out runs/trace

The harness's own trials (same seed: the same facts and distractors as
scripts/degradation.py), lived through each recipe; prints per trial and
checkpoint the fact turn's tokens still in a slot and whether the answer's
words are all held whole; writes OUT/trace.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=["select-sticky", "select-words"])
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--cycles", type=int, nargs="+", default=[0, 1, 2, 5, 10, 20])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=0, help="distractor turns before the fact (as the harness's)")
    p.add_argument("--model", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="runs/trace")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from companion import EngramConfig, Engine, load_model
    from companion.eval.harness import DistractorPool, RunSettings, Trial
    from companion.eval.harness.trace import trace_session
    from companion.eval.harness.trial import ACK
    from companion.app.settings import cache_dir

    lm = load_model(args.model, cache_root=cache_dir())
    pool = DistractorPool.load(None)
    settings = RunSettings(seed=args.seed, cycles=args.cycles, warmup=args.warmup)
    rows = []
    for recipe in args.recipes:
        engine = Engine(lm, EngramConfig(recipe=recipe))
        held_whole = {k: 0 for k in args.cycles}
        for i in range(args.trials):
            t = Trial([engine], settings, pool, i)
            w = len(t.warmup)
            labels = trace_session(engine, [*t.warmup, (t.fact.statement, ACK), *t.distractors[:max(args.cycles)]])
            answer = "".join(t.fact.answer.lower().split())
            for k in args.cycles:
                fact_tokens = [s.text for s in labels[w + k] if s is not None and s.turn == w]
                whole = answer in "".join(fact_tokens).lower().replace(" ", "")
                held_whole[k] += whole
                rows.append({"recipe": recipe, "trial": i, "k": k, "answer": t.fact.answer,
                             "fact_tokens_held": fact_tokens, "answer_held_whole": whole})
                print(f"{recipe} trial {i} k={k}: {len(fact_tokens)} fact slots, answer whole: {whole}: "
                      + " ".join(repr(x) for x in fact_tokens), file=sys.stderr)
        print(f"{recipe}: answer held whole, by k: "
              + ", ".join(f"k={k} {held_whole[k]}/{args.trials}" for k in args.cycles))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "trace.json").write_text(json.dumps({"command": " ".join(["scripts/research/trace_slots.py", *sys.argv[1:]]),
                                                "rows": rows}, indent=1))
    print(f"wrote {out}/trace.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
