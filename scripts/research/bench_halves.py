"""Benchmark: batched turns and asks of several recipes, with and without what their rows share.

    python scripts/research/bench_halves.py --out runs/bench_halves.json
    python scripts/research/bench_halves.py --recipes all --out runs/bench_halves_all.json

Layer-L readers leave blocks 1..L blind to the engram, so rows with the same
text share them (companion.engine.halves); rows that open alike share the head they
open with (companion.batched.prefix). This lives --sessions sessions for --turns
turns under every recipe (one absorb_rows call a turn, as the harness and
LoCoMo replay do), then asks each session a question with its own and with
another session's engram (one answer_rows call, as the harness's checkpoints
do), three times in one process: whole passes, the lower half shared, and
the lower half and the head shared; it prints the time of each and checks
all three gave the same engrams and replies.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from companion import EngramConfig, Engine, load_model
from companion.batched.absorb import absorb_rows
from companion.batched.batch import answer_rows
from companion.eval.benchmarks import user_lines, write_json
from companion.engine.halves import whole_passes
from companion.batched.prefix import without_heads
from companion.engine.recipes import recipe_names
from companion.app.settings import cache_dir

LAYER_RECIPES = ["deep-framed", "select-deep", "select-sticky", "select-words", "select-context", "select-fade",
                 "select-user", "select-statements"]
QUESTIONS = ["What did I say I like?", "Where was I last weekend?", "Who did I mention?"]


def live_and_ask(engines: list[Engine], sessions: int, turns: int, seed: int, max_new_tokens: int) -> dict:
    lines = user_lines(sessions * turns, seed)
    engrams = [[None] * sessions for _ in engines]
    t0 = time.perf_counter()
    for t in range(turns):
        rows = [(ei, s) for ei in range(len(engines)) for s in range(sessions)]
        got = absorb_rows([engines[ei] for ei, _ in rows], [engrams[ei][s] for ei, s in rows],
                          [(lines[s * turns + t], "I see.") for _, s in rows])
        for (ei, s), (engram, _states) in zip(rows, got):
            engrams[ei][s] = engram
    lived = time.perf_counter() - t0
    rows = [(ei, s, f) for ei in range(len(engines)) for s in range(sessions) for f in (s, (s + 1) % sessions)]
    t0 = time.perf_counter()
    answers = answer_rows([engines[ei] for ei, _, _ in rows], [engrams[ei][f] for ei, _, f in rows],
                          [QUESTIONS[s % len(QUESTIONS)] for _, s, _ in rows], max_new_tokens=max_new_tokens)
    asked = time.perf_counter() - t0
    return {"lived_s": lived, "asked_s": asked, "engrams": engrams, "replies": [a.reply for a in answers]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--recipes", nargs="+", default=LAYER_RECIPES, help="recipe names, or 'all'")
    p.add_argument("--sessions", type=int, default=6)
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = load_model(args.model, cache_root=cache_dir())
    recipes = recipe_names() if args.recipes == ["all"] else args.recipes
    engines = [Engine(lm, EngramConfig(recipe=r)) for r in recipes]
    live_and_ask(engines, 2, 1, args.seed, 2)  # warm-up: first-call allocations out of every timing
    runs = {}
    with without_heads():
        with whole_passes():
            runs["whole"] = live_and_ask(engines, args.sessions, args.turns, args.seed, args.max_new_tokens)
        runs["halves"] = live_and_ask(engines, args.sessions, args.turns, args.seed, args.max_new_tokens)
    runs["halves+head"] = live_and_ask(engines, args.sessions, args.turns, args.seed, args.max_new_tokens)
    base = runs["whole"]
    diff = max(float((a - b).abs().max()) for run in runs.values() for ea, eb in zip(base["engrams"], run["engrams"])
               for a, b in zip(ea, eb))
    same = min(sum(a == b for a, b in zip(base["replies"], run["replies"])) / len(base["replies"])
               for run in runs.values())
    r = {"recipes": recipes, "sessions": args.sessions, "turns": args.turns, "threads": torch.get_num_threads(),
         **{name: {k: round(run[k], 2) for k in ("lived_s", "asked_s")} for name, run in runs.items()},
         "speedup": {name: {"lived": base["lived_s"] / run["lived_s"], "asked": base["asked_s"] / run["asked_s"]}
                     for name, run in runs.items() if name != "whole"},
         "max_engram_abs_diff": diff, "same_reply_fraction": same}
    print(f"{len(engines)} recipes x {args.sessions} sessions, {args.turns} turns lived, {len(base['replies'])} asks:")
    for name, run in runs.items():
        print(f"  {name:12s} lived {run['lived_s']:6.1f} s ({base['lived_s'] / run['lived_s']:.2f}x)  "
              f"asked {run['asked_s']:6.1f} s ({base['asked_s'] / run['asked_s']:.2f}x)")
    print(f"engrams differ by at most {diff:.2e}; identical replies {same:.1%}")
    write_json(args.out, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
