"""Benchmark a warm server: a one-token `companion say` through it vs in-process, and decode tokens/s.

    python scripts/bench_serve.py --reps 5 --threads 1 --out runs/bench_serve.json
    python scripts/bench_serve.py --skip-say --compare --decode-reps 5 --out runs/bench_decode.json
    pip install -e '.[bench]'   # the llama.cpp row: llama-cpp-python, built from source (minutes on 2 cores)

Part 1 times the real command (wall clock of `python -m companion say ... --max-new-tokens 1`, in a fresh
data folder that shares the model cache) through a `companion serve` started for that folder, and with
--no-server, several repetitions each, interleaved. Part 2 decodes a 128-token greedy reply (the end
token suppressed) with --threads threads: Companion's engine (the engram written as every turn does) and,
when llama-cpp-python is installed, llama.cpp on the same GGUF (a benchmark-only extra: it cannot write
layer 16, so it is never the product's engine). llama.cpp runs with n_batch=1: batched prefill crashed in a
GGML_NATIVE build on this machine, one token at a time did not. --compare times, interleaved with ours, the
engine's older way of reading layer 16 (every layer's states asked for at every step) and checks that both
give the same replies and engrams, greedy and seeded, over two turns (the second with the first's engram).
Where a step of ours goes (1 thread): about 80% is fp32 matrix-vector products, the 540 MB of weights read
once per token (llama.cpp reads the Q4_1 GGUF's ~5x fewer bytes), the rest transformers' per-op Python;
so without changing the bits of any output only that Python can shrink.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from companion.app.settings import cache_dir
from companion.eval.benchmarks import write_json

PROMPT = "Tell me about the sea, the ships on it and the people who sail them."


def _env(home: Path, threads: int) -> dict:
    return {**os.environ, "COMPANION_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads),
            "TOKENIZERS_PARALLELISM": "false"}


def _say(home: Path, threads: int, model: list[str], *args: str) -> float:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "companion", "say", *model, "--max-new-tokens", "1", *args, "Hi."],
                         env=_env(home, threads), capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"bench_serve: `companion say` failed: {res.stderr.strip()[-400:]}")
    return took


def say_times(args) -> dict:
    """Median wall seconds of a one-token say: through a warm server and in-process."""
    model = ["--model", args.model] if args.model else []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir(mode=0o700)
        (home / "models").symlink_to(cache_dir())  # the converted weights, not converted again
        server = subprocess.Popen([sys.executable, "-m", "companion", "serve", *model, "--keep-alive", "-1"],
                                  env=_env(home, args.threads), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                ps = subprocess.run([sys.executable, "-m", "companion", "ps", "--json"], env=_env(home, 1),
                                    capture_output=True, text=True)
                if ps.returncode == 0 and json.loads(ps.stdout).get("server"):
                    break
                time.sleep(0.5)
            else:
                raise SystemExit("bench_serve: the server did not start")
            _say(home, args.threads, model, "-s", "served")  # first turns of both sessions: not timed
            _say(home, args.threads, model, "-s", "local", "--no-server")
            served, local = [], []
            for _ in range(args.reps):
                served.append(_say(home, args.threads, model, "-s", "served"))
                local.append(_say(home, args.threads, model, "-s", "local", "--no-server"))
        finally:
            subprocess.run([sys.executable, "-m", "companion", "serve", "--stop"], env=_env(home, 1),
                           capture_output=True, timeout=120)
            server.wait(60)
    return {"served_s": served, "in_process_s": local, "served_median_s": statistics.median(served),
            "in_process_median_s": statistics.median(local)}


def _decode(engine, tokens: int, tap_layer: bool) -> tuple[float, object]:
    """Decode tokens/s (between the first and the last streamed piece) of a `tokens`-token greedy reply."""
    engine.tap_layer = tap_layer
    stamps = []
    result = engine.run_turn(None, PROMPT, max_new_tokens=tokens, min_new_tokens=tokens,
                             on_text=lambda _piece: stamps.append(time.perf_counter()))
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]), result


def _same_both_ways(engine, seed: int) -> bool:
    """Whether reading layer 16 by hook and by asking for every layer's states give the same replies and
    engrams: greedy and seeded sampling, two turns each (the second written from the first's engram)."""
    import torch

    from companion.engine.sampling import Sampling

    runs = {}
    for tap_layer in (True, False):
        engine.tap_layer = tap_layer
        runs[tap_layer] = []
        for sampling in (None, Sampling(temperature=0.8, top_p=0.9, seed=seed)):
            engram = None
            for turn in range(2):
                r = engine.run_turn(engram, PROMPT, max_new_tokens=32, sampling=sampling, turn=turn)
                runs[tap_layer].append((r.reply, r.engram))
                engram = r.engram
    engine.tap_layer = True
    return all(a[0] == b[0] and torch.equal(a[1], b[1]) for a, b in zip(runs[True], runs[False]))


def ours(args) -> dict:
    """Decode tokens/s of Companion's engine on a 128-token greedy reply, the engram written (the median of
    --decode-reps); with --compare, the older way of reading layer 16 too, interleaved."""
    import torch

    from companion.engine.config import EngramConfig
    from companion.engine.cycle import Engine
    from companion.engine.loading import load_model
    from companion.engine.recipes import default_for

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    lm = load_model(args.model, cache_root=cache_dir(), quiet=True)
    engine = Engine(lm, EngramConfig(recipe=default_for(lm)))
    engine.run_turn(None, "Hello.", max_new_tokens=8)  # warm-up
    ways = {"hook": True, "all_states": False} if args.compare else {"hook": True}
    rates: dict[str, list[float]] = {way: [] for way in ways}
    for rep in range(args.decode_reps):
        # Alternate which way goes first, so drift in the shared CPU's load falls on both alike.
        for way in (list(ways) if rep % 2 == 0 else list(reversed(ways))):
            rate, result = _decode(engine, args.tokens, ways[way])
            rates[way].append(rate)
    r = {"reply_tokens": result.reply_tokens, "decode_tok_s": statistics.median(rates["hook"]),
         "decode_tok_s_runs": rates["hook"],
         "turn_tok_s": result.reply_tokens / (result.gen_seconds + result.update_seconds),
         "recipe": engine.config.recipe}
    if args.compare:
        r["all_states_decode_tok_s"] = statistics.median(rates["all_states"])
        r["all_states_decode_tok_s_runs"] = rates["all_states"]
        r["identical"] = _same_both_ways(engine, args.seed)
    return r


def llama_cpp(args) -> dict | None:
    """The same through llama.cpp on the embedded GGUF, or None (with how to install it) when absent."""
    try:
        from llama_cpp import Llama
    except ImportError:
        print("llama.cpp row skipped: llama-cpp-python is not installed; `.venv/bin/pip install "
              "'.[bench]'` (llama-cpp-python) builds it from source (minutes on 2 cores)", file=sys.stderr)
        return None
    from companion.engine.loading import embedded_gguf

    path = Path(args.gguf) if args.gguf else embedded_gguf()
    llm = Llama(model_path=str(path), n_threads=args.threads, n_threads_batch=args.threads, n_batch=1,
                n_ctx=1024, seed=args.seed, verbose=False)
    messages = [{"role": "user", "content": PROMPT}]
    llm.create_chat_completion(messages=[{"role": "user", "content": "Hello."}], max_tokens=8, temperature=0)
    stamps = []
    bias = {llm.token_eos(): -1e9}
    for _chunk in llm.create_chat_completion(messages=messages, max_tokens=args.tokens, temperature=0,
                                             logit_bias=bias, stream=True):
        stamps.append(time.perf_counter())
    pieces = len(stamps) - 2  # the role chunk and the finishing chunk carry no token
    return {"reply_chunks": pieces, "decode_tok_s": (pieces - 1) / (stamps[-2] - stamps[1]), "gguf": str(path)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="as `companion --model` (default: the embedded model)")
    p.add_argument("--gguf", default=None, help="GGUF for the llama.cpp row (default: the embedded one)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-say", action="store_true", help="only the decode rows")
    p.add_argument("--decode-reps", type=int, default=1, help="timed replies of ours (the median is shown)")
    p.add_argument("--compare", action="store_true",
                   help="also time the engine's older way of reading layer 16, interleaved, and check both agree")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    r = {"threads": args.threads, "tokens": args.tokens, "reps": args.reps}
    if not args.skip_say:
        r["say"] = say_times(args)
        s = r["say"]
        r["say"]["ratio"] = s["served_median_s"] / s["in_process_median_s"]
        print(f"one-token say   warm server {s['served_median_s']:6.2f} s | in-process "
              f"{s['in_process_median_s']:6.2f} s | ratio {s['ratio']:.3f} (goal <= 0.15; median of {args.reps})")
    r["ours"], r["llama_cpp"] = ours(args), llama_cpp(args)
    theirs = r["llama_cpp"]["decode_tok_s"] if r["llama_cpp"] else None
    print(f"decode tok/s    companion {r['ours']['decode_tok_s']:6.1f} | llama.cpp "
          + (f"{theirs:6.1f} | ratio {theirs / r['ours']['decode_tok_s']:.2f}x (goal <= 1.5x)" if theirs
             else "  skipped (not installed)") + f"  [{args.threads} thread(s), {args.tokens}-token greedy reply]")
    if args.compare:
        o = r["ours"]
        print(f"decode tok/s    layer 16 by hook {o['decode_tok_s']:6.1f} | every layer's states "
              f"{o['all_states_decode_tok_s']:6.1f} | x{o['decode_tok_s'] / o['all_states_decode_tok_s']:.3f} "
              f"(median of {args.decode_reps}, interleaved); same replies and engrams: {o['identical']}")
    write_json(args.out, r)
    return 0 if r["ours"].get("identical", True) else 1


if __name__ == "__main__":
    sys.exit(main())
