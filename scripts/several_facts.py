#!/usr/bin/env python
"""Several facts in one conversation: how many of F does each memory recall at its end?

    python scripts/several_facts.py --recipes select-keep select-chat --trials 6 --threads 2 --out runs/several

F facts of different harness templates are said at spread-out turns of a
--turns-turn conversation (LoCoMo distractor turns between them); at its end
each fact's question is asked from the final memory, and one question of a
template never told whose answer is of a told kind (an intrusion: the reply
states a told answer). Rows: engram:<recipe> per recipe, none, transcript,
retrieval (BM25 top 3). Finished trials are appended to OUT/trials.jsonl (a
rerun resumes); OUT/summary.json and OUT/several.md hold the table.
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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=["select-chat"], metavar="NAME")
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--facts", type=int, default=5, help="facts told in each conversation")
    p.add_argument("--turns", type=int, default=40, help="turns in each conversation, the facts included")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None)
    p.add_argument("--data", default=None, help="LoCoMo folder for distractors, or 'generated'")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="runs/several")
    args = p.parse_args(argv)
    if not 1 <= args.facts <= args.turns:
        p.error("--facts must be between 1 and --turns")

    import torch

    from companion.app.settings import cache_dir
    from companion.corpora.conversations import DistractorPool
    from companion.engine.config import EngramConfig
    from companion.engine.cycle import Engine
    from companion.engine.loading import load_model
    from companion.eval.harness.several import SeveralSettings, live, rows_for, summarise, table
    from companion.eval.harness.summary import code_version

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = SeveralSettings(seed=args.seed, facts=args.facts, turns=args.turns)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    identity = {"recipes": args.recipes, "settings": settings.__dict__, "data": args.data, "model": args.model}
    ident_file = out / "run.json"
    if ident_file.is_file() and json.loads(ident_file.read_text()) != identity:
        print(f"error: {out} holds a run with other settings; use another --out", file=sys.stderr)
        return 2
    ident_file.write_text(json.dumps(identity, indent=2))
    lm = load_model(args.model, cache_root=cache_dir(), quiet=True)
    engines = [Engine(lm, EngramConfig(recipe=r)) for r in args.recipes]
    pool = DistractorPool.load(args.data)
    done_file = out / "trials.jsonl"
    records = [json.loads(line) for line in done_file.read_text().splitlines()] if done_file.is_file() else []
    t0 = time.time()
    for i in range(len(records), args.trials):
        rec = live(engines, settings, pool, i)
        with done_file.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        records.append(rec)
        print(f"trial {i}: " + ", ".join(f"{k} {sum(v['correct'])}" for k, v in rec["answers"].items()), flush=True)
    rows = [name for name, _ in rows_for(args.recipes)]
    summary = summarise(records, rows)
    command = "python scripts/several_facts.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    text = (f"Several facts in one conversation: {settings.facts} facts at turns "
            f"{', '.join(str(p + 1) for p in settings.positions())} of {settings.turns}, asked at its end; "
            f"{len(records)} trials, {lm.name}, distractors {pool.source}, code {code_version()}.\n\n"
            f"    {command}\n\n" + table(summary, settings) + "\n")
    (out / "several.md").write_text(text)
    (out / "summary.json").write_text(json.dumps({"command": command, "summary": summary,
                                                  "configs": {e.config.recipe: e.config.to_dict() for e in engines},
                                                  "seconds": round(time.time() - t0, 1)}, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
