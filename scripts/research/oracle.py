#!/usr/bin/env python
"""The format's ceiling: per planted fact, optimise the N engram vectors directly
(LM frozen) so the model repeats the fact's statement from them alone, then ask
the fact's question with them through the same reader.

    python scripts/research/oracle.py --trials 6 --steps 200 --threads 1 --out runs/oracle
    python scripts/research/oracle.py --readers oracle:prefix oracle:deep-framed --trials 2 --out runs/oracle-two

Readers: prefix (seed's), framed, deep, deep-framed (layer L), and the deep ones
constrained to real layer-L states (deep-constrained, deep-framed-constrained).
Resumes from DIR/trials.jsonl (one line per (reader, trial); keep the settings).
Outputs: DIR/trials.jsonl, DIR/results.json, DIR/oracle.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None) -> int:
    from companion.eval.harness import oracle as O

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/oracle", help="output folder (resumes what is there)")
    p.add_argument("--model", default=None, help="model to load (default: the embedded SmolLM2-135M)")
    p.add_argument("--readers", nargs="+", default=[f"oracle:{r}" for r in O.ORACLE_READERS],
                   help=f"oracle readers ({', '.join(O.ORACLE_READERS)}; 'oracle:' optional)")
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--seed", type=int, default=0, help="facts are facts_for(seed, trial)")
    p.add_argument("--steps", type=int, default=200, help="Adam steps at most")
    p.add_argument("--lr", type=float, default=0.1, help="relative to the starting vectors' RMS coordinate")
    p.add_argument("--stop-below", type=float, default=0.005,
                   help="stop once the mean per-token reconstruction loss is below this (0: never)")
    p.add_argument("--k", type=int, default=64, help="principal directions of the constrained readers")
    p.add_argument("--layer", type=int, default=16)
    p.add_argument("--slots", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a shared CPU)")
    args = p.parse_args(argv)
    readers = [O.reader_name(r) for r in args.readers]

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from companion.eval.harness.facts import facts_for
    from companion.engine.loading import load_model
    from companion.app.settings import cache_dir

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "trials.jsonl"
    settings = {k: getattr(args, k) for k in ("seed", "steps", "lr", "stop_below", "k", "layer", "slots",
                                               "max_new_tokens", "model")}
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    for r in records:
        if r.get("settings") != settings:
            sys.exit(f"{log} was written with other settings ({r.get('settings')}); use another --out")
    done = {(r["reader"], r["trial"]) for r in records}

    t0 = time.perf_counter()
    lm = load_model(args.model, cache_root=cache_dir(), quiet=True)
    engines, pools = {}, {}
    for trial in range(args.trials):
        fact, _ = facts_for(args.seed, trial)
        for reader in readers:
            if (f"oracle:{reader}", trial) in done:
                continue
            if reader not in engines:
                engines[reader] = O.engine_for(lm, reader, layer=args.layer, slots=args.slots)
                pools[reader] = O.real_pool(engines[reader])
            rec = O.run_trial(engines[reader], fact, reader=reader, trial=trial, seed=args.seed, steps=args.steps,
                              lr=args.lr, k=args.k, stop_below=args.stop_below or None,
                              max_new_tokens=args.max_new_tokens, pool=pools[reader])
            rec["settings"] = settings
            with log.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            records.append(rec)
            print(f"trial {trial} {rec['reader']}: {'right' if rec['correct'] else 'wrong'} {rec['reply']!r} "
                  f"(answer {rec['answer']!r}; reconstruction {'exact' if rec['reconstruction_exact'] else 'off'} "
                  f"after {rec['steps_run']} steps; {rec['seconds']:.0f} s)", flush=True)

    wanted = {f"oracle:{r}" for r in readers}
    kept = [r for r in records if r["reader"] in wanted and r["trial"] < args.trials]
    rows = O.summarise(kept)
    command = "python scripts/research/oracle.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    (out / "results.json").write_text(json.dumps({"command": command, "settings": settings, "summary": rows,
                                                  "trials": kept, "wall_seconds": time.perf_counter() - t0},
                                                 indent=2))
    table = O.table_md(rows)
    (out / "oracle.md").write_text(f"`{command}`\n\n{table}")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
