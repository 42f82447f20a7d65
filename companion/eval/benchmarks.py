"""Measurements behind scripts/bench_turns.py and scripts/bench_store.py.

Every figure is measured side by side in one run, so ratios compare like with
like on whatever the machine is doing at the time.
"""

from __future__ import annotations

import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from companion.engine.config import EngramConfig
from companion.engine.cycle import Engine
from memory_store import crud, open_store

from .modes import format_turns, with_context

TOPICS = ["gardening", "chess", "the weather", "jazz", "bread baking", "hiking", "old films", "bicycles",
          "tea", "astronomy", "knitting", "trains", "birds", "painting", "football", "poetry"]
ASKS = ["What do you think about {t}?", "Tell me one thing you like about {t}.", "Any tips on {t}?",
        "I spent the afternoon on {t}. Thoughts?", "Why do people enjoy {t}?", "Is {t} hard to learn?"]


def write_json(path: str | None, data: dict) -> None:
    """Write a benchmark's figures to --out (nothing when no path was given)."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2, default=str))


def recipe_options(parser) -> None:
    """--recipe, --layer, --slots as `companion chat` has them (defaults: the seed recipe at 16 / 32)."""
    from companion.app.cli import recipe_arg

    parser.add_argument("--recipe", type=recipe_arg, default=None, metavar="NAME",
                        help="engram recipe (default seed; `companion recipes` lists them)")
    parser.add_argument("--layer", type=int, default=None, help="hidden-state layer (default 16)")
    parser.add_argument("--slots", type=int, default=None, help="vectors per engram (default 32)")


def recipe_config(args) -> EngramConfig:
    """The recipe the options name; the results record it (with its fixed-tensor hash, once an engine has it)."""
    return EngramConfig(**{k: getattr(args, k) for k in ("recipe", "layer", "slots") if getattr(args, k) is not None})


def recipe_argv(args) -> list[str]:
    """The same options for a `companion` command line."""
    return [a for k in ("recipe", "layer", "slots") if getattr(args, k) is not None
            for a in (f"--{k}", str(getattr(args, k)))]


def user_lines(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(ASKS).format(t=rng.choice(TOPICS)) for _ in range(n)]


def rss_mb() -> float:
    """Current resident set size (Linux /proc), in MB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # KB on Linux


def window_median(values: dict[int, float], turn: int, half: int = 2) -> float:
    """Median over turns turn-half..turn+half, to damp one-off scheduler noise."""
    return statistics.median(values[t] for t in range(turn - half, turn + half + 1) if t in values)


class BenchSession:
    """A session driven the way the companion drives one: load engram, turn, commit."""

    def __init__(self, engine: Engine, store, name: str, reply_tokens: int):
        self.engine, self.store, self.name, self.reply = engine, store, name, reply_tokens
        with store.session() as db, db.begin():
            crud.create_session(db, name=name, model_name=engine.lm.name, model_fingerprint=engine.lm.fingerprint,
                                engram_config=engine.config.to_dict())

    def turn(self, text: str) -> dict:
        t0 = time.perf_counter()
        with self.store.session() as db:
            chat = crud.get_session(db, name=self.name)
            found = crud.latest_engram(db, chat=chat)
            cycle = chat.cycle
        engram = None if found is None else found[0]
        res = self.engine.run_turn(engram, text, max_new_tokens=self.reply, min_new_tokens=self.reply)
        with self.store.session() as db, db.begin():
            chat = crud.get_session(db, name=self.name)
            crud.add_turn(db, chat=chat, expected_cycle=cycle, user_text=text, reply_text=res.reply,
                          prompt_tokens=res.prompt_tokens, reply_tokens=res.reply_tokens, transcript_tokens=0,
                          gen_seconds=res.gen_seconds, update_seconds=res.update_seconds, engram=res.engram,
                          engram_config=self.engine.config.to_dict())
        return {"turn": cycle + 1, "seconds": time.perf_counter() - t0, "prompt_tokens": res.prompt_tokens,
                "user": text, "reply": res.reply, "rss_mb": rss_mb()}


def paired_turn_times(old: BenchSession, young: BenchSession, lines: list[str], reps: int) -> dict:
    """Median turn time of a long session vs a young one, turns alternated so load drift hits both."""
    times: dict[str, list[float]] = {"old": [], "young": []}
    start = {"old": None, "young": None}
    for i in range(reps):
        for key, sess in (("old", old), ("young", young)):
            rec = sess.turn(lines[i % len(lines)])
            start[key] = start[key] or rec["turn"]
            times[key].append(rec["seconds"])
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"old_turns": start["old"], "young_turns": start["young"], "median_s": med,
            "ratio": med["old"] / med["young"]}


def transcript_turn(engine: Engine, history: list[tuple[str, str]], text: str, reply_tokens: int) -> dict:
    """The same turn with the whole transcript as text instead of an engram."""
    t0 = time.perf_counter()
    res = engine.run_turn(None, with_context(format_turns(history), text), max_new_tokens=reply_tokens,
                          min_new_tokens=reply_tokens, update=False)
    return {"seconds": time.perf_counter() - t0, "prompt_tokens": res.prompt_tokens}


def update_overhead(engine: Engine, engram: torch.Tensor, text: str, reply_tokens: int, reps: int) -> dict:
    """Turn time with the engram update (reused states, and the plain second pass) vs no memory at all."""
    kinds = {
        "no-memory": dict(engram=None, update=False),
        "engram-no-update": dict(engram=engram, update=False),
        "engram-reuse": dict(engram=engram, update=True, reuse_states=True),
        "engram-second-pass": dict(engram=engram, update=True, reuse_states=False),
    }
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(reps):  # interleaved, so drift hits every kind alike
        for kind, kw in kinds.items():
            kw = dict(kw)
            e = kw.pop("engram")
            t0 = time.perf_counter()
            engine.run_turn(e, text, max_new_tokens=reply_tokens, min_new_tokens=reply_tokens, **kw)
            times[kind].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"median_s": med,
            "update_overhead": med["engram-reuse"] / med["no-memory"] - 1,
            "update_overhead_second_pass": med["engram-second-pass"] / med["no-memory"] - 1,
            # the update alone (extraction + pooling), the previous engram injected in both
            "update_only_overhead": med["engram-reuse"] / med["engram-no-update"] - 1}


def second_start(cache_home: Path, model: str | None, threads: int | None = None,
                 config: EngramConfig | None = None) -> float:
    """Wall time of a fresh process that loads the cached model and is ready for a turn of `config`."""
    recipe = (config or EngramConfig()).to_json()
    code = ((f"import torch; torch.set_num_threads({threads});" if threads else "") +
            "import json; from companion.engine.loading import load_model; from companion.engine.config import EngramConfig;"
            "from companion.engine.cycle import Engine; from companion.app.settings import cache_dir;"
            f"Engine(load_model({model!r}, cache_root=cache_dir(), quiet=True), "
            f"EngramConfig.from_dict(json.loads({recipe!r}))); print('ready')")
    env = {**os.environ, "COMPANION_HOME": str(cache_home), "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if "ready" not in out.stdout:
        raise RuntimeError(f"second start failed: {out.stderr.strip()[-500:]}")
    return took


def store_roundtrip(*, shape=(32, 576), existing: int = 1000, reps: int = 200, db_url: str | None = None,
                    config: EngramConfig | None = None) -> dict:
    """Milliseconds to commit one engram (with its turn) and to load + verify the latest one."""
    tmp = tempfile.mkdtemp(prefix="bench-store-")
    store = open_store(db_url or f"sqlite:///{Path(tmp) / 'bench.db'}")
    cfg = (config or EngramConfig()).to_dict()
    with store.session() as db, db.begin():
        chat = crud.create_session(db, name="store-bench", model_name="bench", model_fingerprint="0" * 64,
                                   engram_config=cfg)
    def commit_one(i):
        with store.session() as db, db.begin():
            chat = crud.get_session(db, name="store-bench")
            crud.add_turn(db, chat=chat, expected_cycle=chat.cycle, user_text=f"u{i}", reply_text=f"r{i}",
                          prompt_tokens=1, reply_tokens=1, transcript_tokens=1, gen_seconds=0.0,
                          update_seconds=0.0, engram=torch.randn(*shape), engram_config=cfg)
    for i in range(existing):
        commit_one(i)
    store_ms, load_ms = [], []
    for i in range(reps):
        t0 = time.perf_counter()
        commit_one(existing + i)
        store_ms.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        with store.session() as db:
            chat = crud.get_session(db, name="store-bench")
            crud.latest_engram(db, chat=chat)
        load_ms.append((time.perf_counter() - t0) * 1e3)
    store.close()
    return {"engram_store_ms": statistics.median(store_ms), "engram_load_ms": statistics.median(load_ms),
            "engram_store_ms_p95": sorted(store_ms)[int(0.95 * reps)],
            "engram_load_ms_p95": sorted(load_ms)[int(0.95 * reps)], "engrams_in_db": existing + reps}
