"""Benchmark: milliseconds to store one engram (with its turn) and to load and verify one.

    python scripts/bench_store.py --out runs/bench_store.json
    python scripts/bench_store.py --db postgresql+psycopg://localhost/companion
"""

from __future__ import annotations

import argparse
import sys

import torch

from companion.eval.benchmarks import store_roundtrip, write_json


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default=None, help="SQLAlchemy URL (default: a fresh SQLite file in a temp folder)")
    p.add_argument("--existing", type=int, default=1000, help="engrams already in the session")
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--shape", type=int, nargs=2, default=[32, 576])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    r = store_roundtrip(shape=tuple(args.shape), existing=args.existing, reps=args.reps, db_url=args.db)
    print(f"engram store: {r['engram_store_ms']:.2f} ms median ({r['engram_store_ms_p95']:.2f} p95)")
    print(f"engram load : {r['engram_load_ms']:.2f} ms median ({r['engram_load_ms_p95']:.2f} p95)")
    print(f"with {r['engrams_in_db']} engrams of shape {tuple(args.shape)} in the session; goal < 5 ms each")
    write_json(args.out, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
