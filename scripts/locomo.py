#!/usr/bin/env python
"""LoCoMo evaluation of Companion's memory modes (logic in companion.eval.locomo).

    python scripts/locomo.py --limit 50 --out runs/locomo
    python scripts/locomo.py --limit 50 --recipes seed select-deep --out runs/locomo-two
    python scripts/locomo.py --limit 50 --recipes all --out runs/locomo-all

Replays every conversation into a stored session per recipe (cached in
OUT/replays.db), asks each sampled question through each mode row (engram:,
foreign: and engram+retrieval:<recipe> per recipe; none, transcript, recent,
retrieval once), records F1 and the gold answer's teacher-forced NLL, and writes
OUT/answers.jsonl (resumable with the same recipes), OUT/results.json,
OUT/locomo.md, OUT/locomo.png.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from companion.eval.locomo import RunSettings, default_data_dir, load, run, write  # noqa: E402
from companion.eval.modes import ALIASES, KINDS, MODE_NAMES, recipe_list  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None,
                   help="a LoCoMo JSON file or a folder of them (default: $COMPANION_LOCOMO or ../shared/data/locomo-dev)")
    p.add_argument("--limit", type=int, default=50, help="questions per conversation, balanced by category (0: all)")
    p.add_argument("--modes", nargs="+", default=list(MODE_NAMES), choices=[*KINDS, *ALIASES],
                   help=f"mode kinds (default: {' '.join(MODE_NAMES)}); the engram kinds get a row per recipe")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--recipes", nargs="+", default=None, metavar="NAME",
                       help="recipes to compare in one run, or 'all' (default: seed); the first answers the text modes")
    which.add_argument("--recipe", default=None, metavar="NAME", help="one recipe (same as --recipes NAME)")
    p.add_argument("--model", default=None, help="Hugging Face id, folder or .gguf (default: embedded SmolLM2-135M)")
    p.add_argument("--layer", type=int, default=16, help="engram layer of every recipe")
    p.add_argument("--slots", type=int, default=32, help="engram vectors of every recipe")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "locomo")
    p.add_argument("--db", default=None, help="SQLAlchemy URL of the replay cache (default: OUT/replays.db)")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--context-chars", type=int, default=6000, help="bound on the text modes' context")
    p.add_argument("--batch", type=int, default=10,
                   help="questions (and conversations' turns) per batched forward; 1: one at a time via modes.ask")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--report-only", action="store_true",
                   help="ask nothing: write the reports from OUT/answers.jsonl (questions every mode answered)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    import torch

    from companion.engine.config import EngramConfig
    from companion.engine.cycle import Engine
    from companion.engine.loading import load_model
    from companion.app.settings import cache_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        recipes = recipe_list([args.recipe] if args.recipe else (args.recipes or ["seed"]))
        configs = [EngramConfig(layer=args.layer, slots=args.slots, recipe=r) for r in recipes]
    except ValueError as exc:
        p.error(str(exc))
    data = args.data or default_data_dir(REPO)
    convs = load(data)
    settings = RunSettings(limit=args.limit or None, seed=args.seed, modes=tuple(args.modes),
                           max_new_tokens=args.max_new_tokens, context_chars=args.context_chars,
                           batch=args.batch)
    lm = load_model(args.model, cache_root=cache_dir(), quiet=True)
    engines = [Engine(lm, c) for c in configs]
    state = run(engines, convs, args.out, settings, store_url=args.db, progress=not args.no_progress,
                ask_missing=not args.report_only)
    command = "python scripts/locomo.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    results = write(args.out, state, settings, engines, command=command, repo=REPO)
    print((args.out / "locomo.md").read_text(encoding="utf-8"))
    print(f"wrote {args.out}/results.json, locomo.md, locomo.png ({len(results['answers'])} answers)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
