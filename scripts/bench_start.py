"""Benchmark the user's view: first and second start to the prompt, seconds per turn, peak RSS.

    python scripts/bench_start.py --turns 20 --out runs/bench_start.json

Runs the real `companion chat` in fresh processes, with a fresh data folder
(so the first start converts the GGUF), reading scripted lines from stdin.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from companion.eval.benchmarks import recipe_argv, recipe_options, user_lines, write_json


def run_chat(home: Path, lines: list[str], *args: str) -> dict:
    """One `companion chat` process: wall time, its own peak RSS (wait4), exit status."""
    env = {**os.environ, "COMPANION_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "companion", "chat", *args], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    proc.stdin.write("".join(f"{line}\n" for line in lines) + "/quit\n")
    proc.stdin.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": usage.ru_maxrss / 1e3, "exit": proc.returncode}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--turns", type=int, default=20)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    recipe_options(p)
    args = p.parse_args(argv)
    recipe = recipe_argv(args)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        first = run_chat(home, [], "-s", "start", *recipe)  # converts the GGUF into the cache, then the prompt
        second = run_chat(home, [], "-s", "start", *recipe)  # loads the cache
        chat = run_chat(home, user_lines(args.turns, args.seed), "-s", "twenty",
                        "--max-new-tokens", str(args.max_new_tokens), *recipe)
        shown = subprocess.run([sys.executable, "-m", "companion", "show", "twenty", "--json"], capture_output=True,
                               text=True, env={**os.environ, "COMPANION_HOME": str(home)})
        shown = json.loads(shown.stdout)
        turns = shown["turns"]
    per_turn = [t["seconds"] for t in turns]
    r = {"recipe": shown["recipe"], "first_start_s": first["seconds"], "second_start_s": second["seconds"],
         "turns": len(turns),
         "seconds_per_turn_mean": sum(per_turn) / len(per_turn), "seconds_per_turn_max": max(per_turn),
         "reply_tokens_mean": sum(t["reply_tokens"] for t in turns) / len(turns),
         "peak_rss_mb_20_turns": chat["peak_rss_mb"], "chat_process_s": chat["seconds"],
         "exits": [first["exit"], second["exit"], chat["exit"]]}
    for k, v in r.items():
        print(f"{k:24} {v:.2f}" if isinstance(v, float) else f"{k:24} {v}")
    write_json(args.out, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
