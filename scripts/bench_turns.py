"""Benchmark: constant cost per turn, update overhead, memory over 500 turns, start time.

    python scripts/bench_turns.py --quick --out runs/bench_turns.json

Prints a table of the figures with their ratios, all measured in this one run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
from pathlib import Path

import torch

from companion.eval.benchmarks import (BenchSession, paired_turn_times, peak_rss_mb, recipe_config, recipe_options,
                                  second_start, store_roundtrip, transcript_turn, update_overhead, user_lines,
                                  window_median, write_json)
from companion.engine.cycle import Engine
from companion.engine.recipes import get_recipe
from companion.engine.loading import load_model
from companion.app.settings import cache_dir, data_dir
from memory_store import open_store


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model spec (default: the embedded SmolLM2-135M)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the figures as JSON to this file")
    p.add_argument("--quick", action="store_true", help="CPU profile: 8-token replies")
    p.add_argument("--turns", type=int, default=500, help="turns in the lived session (RSS is read at the end)")
    p.add_argument("--reply-tokens", type=int, default=None, help="fixed reply length (default 8 quick, 32 full)")
    p.add_argument("--checkpoints", type=int, nargs="+", default=[5, 10, 50, 100, 200])
    p.add_argument("--reps", type=int, default=5, help="repetitions for the update-overhead medians")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is faster on a shared CPU)")
    recipe_options(p)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    reply = args.reply_tokens or (8 if args.quick else 32)
    torch.manual_seed(args.seed)

    lm = load_model(args.model, cache_root=cache_dir())
    engine = Engine(lm, recipe_config(args))
    results: dict = {"model": lm.name, "fingerprint": lm.fingerprint, "recipe": engine.config.to_dict(),
                     "seed": args.seed, "reply_tokens": reply, "turns": args.turns, "device": str(lm.device),
                     "torch_threads": torch.get_num_threads()}
    results["second_start_s"] = second_start(data_dir(), args.model, args.threads, engine.config)
    print(f"second start: {results['second_start_s']:.2f} s", file=sys.stderr)

    lines = user_lines(args.turns, args.seed)
    records, paired = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        main_session = BenchSession(engine, store, "bench", reply)
        for i, text in enumerate(lines, start=1):
            records.append(main_session.turn(text))
            print(f"\rturn {i}/{args.turns}", end="", file=sys.stderr)
            if i in (5, 200):
                # The same turns on a 5-turn session and this one, alternated: the
                # ratio is immune to load changes that a timeline would pick up.
                young = BenchSession(engine, store, f"young-{i}", reply)
                for text5 in lines[:5]:
                    young.turn(text5)
                paired[i] = paired_turn_times(main_session, young, lines[5:], args.reps)
        store.close()
    print(file=sys.stderr)
    # keyed by position in the lived script (the paired measurements add turns in between)
    secs = {i: r["seconds"] for i, r in enumerate(records, start=1)}
    rss = {i: r["rss_mb"] for i, r in enumerate(records, start=1)}
    checkpoints = [c for c in args.checkpoints if c <= args.turns]
    results["turn_seconds"] = {c: window_median(secs, c) for c in checkpoints}
    results["prompt_tokens"] = {c: records[c - 1]["prompt_tokens"] for c in checkpoints}
    results["paired_turn_times"] = paired
    if 200 in paired:
        results["turn_time_ratio_200_vs_5"] = paired[200]["ratio"]
        results["turn_time_ratio_5_vs_5_control"] = paired[5]["ratio"]
        results["turn_time_ratio_200_vs_5_timeline"] = results["turn_seconds"][200] / results["turn_seconds"][5]
        results["prompt_tokens_ratio_200_vs_5"] = results["prompt_tokens"][200] / results["prompt_tokens"][5]

    transcript, ratio = {}, {}
    for c in checkpoints:
        history = [(r["user"], r["reply"]) for r in records[: c - 1]]
        try:
            transcript[c] = transcript_turn(engine, history, lines[c - 1], reply)
        except ValueError as exc:  # no longer fits the context window
            transcript[c] = {"seconds": None, "prompt_tokens": None, "note": str(exc)}
            continue
        ratio[c] = {"time": results["turn_seconds"][c] / transcript[c]["seconds"],
                    "prompt_tokens": results["prompt_tokens"][c] / transcript[c]["prompt_tokens"]}
    results["transcript"] = transcript
    results["engram_vs_transcript_ratio"] = ratio

    overhead = update_overhead(engine, _last_engram(engine, records), lines[0], reply, args.reps)
    results.update(overhead)
    if 10 in rss:
        results["rss_mb_turn_10"], results[f"rss_mb_turn_{args.turns}"] = rss[10], rss[args.turns]
        results["rss_ratio_500_vs_10"] = rss[args.turns] / rss[10]
    results["peak_rss_mb"] = peak_rss_mb()
    width = get_recipe(engine.config.recipe).stored_width(lm.hidden_size)
    results.update(store_roundtrip(shape=(engine.config.slots, width), config=engine.config))
    results["profile_one_turn"] = profile_turn(engine, lines[1], reply)

    print_table(results)
    write_json(args.out, results)
    return 0


def _last_engram(engine: Engine, records) -> torch.Tensor:
    """An engram from a real multi-turn session: replay the last few recorded turns."""
    engram = None
    for r in records[-5:]:
        engram = engine.absorb(engram, r["user"], r["reply"]).engram
    return engram


def profile_turn(engine: Engine, text: str, reply: int) -> str:
    engram = engine.absorb(None, text, "Sure, happy to talk about that.").engram
    prof = cProfile.Profile()
    prof.enable()
    engine.run_turn(engram, text, max_new_tokens=reply, min_new_tokens=reply)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(12)
    return buf.getvalue()


def print_table(r: dict) -> None:
    rows = [("second start (cached weights)", f"{r['second_start_s']:.2f} s", "goal < 5 s")]
    for c, s in r["turn_seconds"].items():
        tr = r["transcript"][c]
        t = f"{tr['seconds']:.2f} s / {tr['prompt_tokens']} tok" if tr["seconds"] else "does not fit"
        rows.append((f"turn {c}: engram vs transcript", f"{s:.2f} s / {r['prompt_tokens'][c]} tok", t))
    if "turn_time_ratio_200_vs_5" in r:
        rows.append(("turn time 200 / 5 (paired)", f"{r['turn_time_ratio_200_vs_5']:.3f}", "goal within 1 +- 0.10"))
        rows.append(("turn time 5 / 5 (paired control)", f"{r['turn_time_ratio_5_vs_5_control']:.3f}", "noise floor"))
        rows.append(("turn time 200 / 5 (timeline)", f"{r['turn_time_ratio_200_vs_5_timeline']:.3f}", "load drift shows here"))
        rows.append(("prompt tokens 200 / 5", f"{r['prompt_tokens_ratio_200_vs_5']:.3f}", "goal 1.0"))
    for c, v in r["engram_vs_transcript_ratio"].items():
        rows.append((f"engram / transcript at turn {c}", f"time {v['time']:.3f}", f"tokens {v['prompt_tokens']:.3f}"))
    rows.append(("update overhead (reused states)", f"{r['update_overhead']:+.1%}", "goal <= +10%"))
    rows.append(("update overhead (second full pass)", f"{r['update_overhead_second_pass']:+.1%}", "before"))
    rows.append(("update alone (engram injected in both)", f"{r['update_only_overhead']:+.1%}", "extraction + pooling"))
    if "rss_ratio_500_vs_10" in r:
        last = r["rss_mb_turn_" + str(r["turns"])]
        rows.append((f"RSS turn {r['turns']} / turn 10", f"{r['rss_ratio_500_vs_10']:.3f}",
                     f"{r['rss_mb_turn_10']:.0f} -> {last:.0f} MB; goal <= 1.05"))
    rows.append(("engram store / load", f"{r['engram_store_ms']:.2f} / {r['engram_load_ms']:.2f} ms", "goal < 5 ms"))
    width = max(len(a) for a, _, _ in rows)
    for a, b, c in rows:
        print(f"{a:<{width}}  {b:<28} {c}")


if __name__ == "__main__":
    sys.exit(main())
