#!/usr/bin/env python
"""Train select-keep's value scorer (what the engram keeps), the language model frozen; deterministic for a seed.

    python scripts/train_retention.py --seed 0 --threads 1 --out runs/keep

The candidate states of every labelled turn are computed once (one batched pass
each: facts of our own templates, conv-26 with its QA evidence lines, chit-chat),
then the scorer trains on them in seconds. select-chat's map is copied in
unchanged, so select-keep differs from it only in what it keeps. Outputs in
DIR: weights.safetensors (the command and the loss curve in its metadata),
history.json, loss.png, retention.json (held-out facts lived through the
writer for up to 100 turns with W = 0, 10, 50 turns before them). To ship: copy
weights.safetensors to companion/engine/recipes/weights/select-keep.safetensors
and record its sha256 in retention.KEEP_WEIGHTS; to try it without shipping,
COMPANION_KEEP_WEIGHTS=DIR/weights.safetensors.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path


def _plot(curve: list[dict], out: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no loss.png", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([p["step"] for p in curve], [p["train"] for p in curve], label="train")
    ax.plot([p["step"] for p in curve], [p["val"] for p in curve], label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("weighted BCE")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=100)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/keep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (results are bit-identical only for one)")
    p.add_argument("--model", default=None, help="model (default: the embedded SmolLM2-135M)")
    p.add_argument("--facts", type=int, default=600, help="planted facts of our own templates")
    p.add_argument("--talk", type=int, default=1500, help="chit-chat lines")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--trials", type=int, default=48, help="held-out facts lived per W in retention.json")
    args = p.parse_args(argv)

    import torch
    from safetensors.torch import save_file

    from companion.app.settings import cache_dir
    from companion.engine.config import EngramConfig
    from companion.engine.cycle import Engine
    from companion.engine.loading import load_model
    from companion.engine.recipes.mapped import CHAT_WEIGHTS
    from companion.engine.recipes.retention import init_value
    from companion.training.retention import LabelledBank, labelled_turns, simulate, train_value

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python scripts/train_retention.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    lm = load_model(args.model, cache_root=cache_dir(), quiet=True)
    chat = Engine(lm, EngramConfig(recipe="select-chat"))
    params = {**{n: chat.fixed[n].float().cpu() for n in ("a", "b")}, **init_value(lm.hidden_size, seed=args.seed)}
    del chat
    engine = Engine(lm, EngramConfig(recipe="select-keep"), fixed=params)
    t0 = time.time()
    turns = labelled_turns(seed=args.seed, facts=args.facts, talk=args.talk)
    bank = LabelledBank.build(engine, turns)
    kinds = {k: sum(t.kind == k for t in turns) for k in ("fact", "evidence", "talk")}
    print(f"bank: {len(turns)} turns {kinds} in {time.time() - t0:.0f}s", flush=True)
    t1 = time.time()
    curve = train_value(bank, params, steps=args.steps, seed=args.seed, lr=args.lr,
                        log=lambda pt: print(json.dumps(pt), flush=True))
    print(f"trained {args.steps} steps in {time.time() - t1:.0f}s", flush=True)
    meta = {"command": command, "seed": str(args.seed), "curve": json.dumps(curve), "recipe": "select-keep",
            "map": f"select-chat's, sha256 {CHAT_WEIGHTS.sha256}"}
    save_file({k: v.contiguous() for k, v in params.items()}, str(out / "weights.safetensors"), metadata=meta)
    (out / "history.json").write_text(json.dumps({"command": command, "curve": curve, "turns": kinds}, indent=2))
    _plot(curve, out)

    cycles = [0, 1, 5, 20, 50, 100]
    report = {"command": command, "cycles": cycles}
    for warmup in (0, 10, 50):
        runs = simulate(engine.writer, bank, params, warmup=warmup, cycles=cycles, trials=args.trials, seed=args.seed)
        got_in = [r["kept"][0] for r in runs]
        row = {"entered": round(statistics.mean(got_in), 3),
               "held": {k: round(statistics.mean(r["kept"][k] for r in runs), 3) for k in cycles},
               "any_left": {k: sum(r["kept"][k] > 0 for r in runs) for k in cycles}, "trials": len(runs)}
        report[f"W={warmup}"] = row
        print(f"W={warmup}: share of the fact's tokens held {row['held']}; facts with any token left "
              f"{row['any_left']} of {len(runs)}", flush=True)
    (out / "retention.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out}/weights.safetensors, history.json, loss.png, retention.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
