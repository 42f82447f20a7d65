"""Benchmark: batched turns and asks of several recipes, the lower half shared vs whole passes.

    python scripts/bench_halves.py --out runs/bench_halves.json

Layer-L readers leave blocks 1..L blind to the engram, so rows with the same
text share them (companion.halves). This lives --sessions sessions for --turns
turns under every recipe (one absorb_rows call a turn, as the harness and
LoCoMo replay do), then asks each session a question with its own and with
another session's engram (one answer_rows call, as the harness's checkpoints
do), once with whole passes and once sharing, in one process; it prints the
time of each and checks both gave the same engrams and replies.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from companion import EngramConfig, Engine, load_model
from companion.batch import absorb_rows, answer_rows
from companion.benchmarks import user_lines, write_json
from companion.halves import whole_passes
from companion.settings import cache_dir

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
    p.add_argument("--recipes", nargs="+", default=LAYER_RECIPES)
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
    engines = [Engine(lm, EngramConfig(recipe=r)) for r in args.recipes]
    live_and_ask(engines, 2, 1, args.seed, 2)  # warm-up: first-call allocations out of both timings
    with whole_passes():
        whole = live_and_ask(engines, args.sessions, args.turns, args.seed, args.max_new_tokens)
    shared = live_and_ask(engines, args.sessions, args.turns, args.seed, args.max_new_tokens)
    diff = max(float((a - b).abs().max()) for ea, eb in zip(whole["engrams"], shared["engrams"])
               for a, b in zip(ea, eb))
    same = sum(a == b for a, b in zip(whole["replies"], shared["replies"])) / len(whole["replies"])
    r = {"recipes": args.recipes, "sessions": args.sessions, "turns": args.turns, "threads": torch.get_num_threads(),
         "whole": {k: round(whole[k], 2) for k in ("lived_s", "asked_s")},
         "shared": {k: round(shared[k], 2) for k in ("lived_s", "asked_s")},
         "lived_speedup": whole["lived_s"] / shared["lived_s"], "asked_speedup": whole["asked_s"] / shared["asked_s"],
         "max_engram_abs_diff": diff, "same_reply_fraction": same}
    print(f"{len(engines)} recipes x {args.sessions} sessions: lived {args.turns} turns in "
          f"{whole['lived_s']:.1f} s whole, {shared['lived_s']:.1f} s shared ({r['lived_speedup']:.2f}x); "
          f"asked {len(whole['replies'])} rows in {whole['asked_s']:.1f} s whole, {shared['asked_s']:.1f} s shared "
          f"({r['asked_speedup']:.2f}x); engrams differ by at most {diff:.2e}, identical replies {same:.1%}")
    write_json(args.out, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
