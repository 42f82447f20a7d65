#!/usr/bin/env python
"""Is chat harmed by the engram? NLL of LoCoMo's true next utterance with each recipe's engram vs none.

    python scripts/next_turn_nll.py --recipes select-sticky select-trained --turns 25 --out runs/next-turn

Reads the report split by default (conv-30, 41, 42, 43; COMPANION_LOCOMO or
../shared/data/locomo-dev), the first --turns turns of each. For tuning, use
what training never replays: --conversations conv-26 --start 120. Writes
OUT/rows.jsonl and OUT/summary.json and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=["select-sticky"], metavar="NAME")
    p.add_argument("--data", type=Path, default=None, help="LoCoMo dev folder")
    p.add_argument("--conversations", nargs="+", default=["conv-30", "conv-41", "conv-42", "conv-43"])
    p.add_argument("--turns", type=int, default=25, help="turns per conversation")
    p.add_argument("--start", type=int, default=0,
                   help="skip this many turns of each conversation first (their engram is still built: "
                        "tuning reads conv-26 from turn 120, past what training replays)")
    p.add_argument("--model", default=None)
    p.add_argument("--seed", type=int, default=0, help="unused (no sampling); kept for the scripts' convention")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from companion import EngramConfig, Engine, load_model
    from companion.eval.locomo import default_data_dir, load
    from companion.eval.locomo.nextturn import next_turn_nll, summarise
    from companion.eval.modes import recipe_list
    from companion.app.settings import cache_dir

    try:
        recipes = recipe_list(args.recipes)
        configs = {r: EngramConfig(recipe=r) for r in recipes}
        convs = [c for c in load(args.data or default_data_dir()) if c.conv_id in args.conversations]
        if not convs:
            raise FileNotFoundError(f"none of {', '.join(args.conversations)} found")
        lm = load_model(args.model, cache_root=cache_dir())
        engines = {r: Engine(lm, c) for r, c in configs.items()}
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for conv in convs:
        rows += next_turn_nll(engines, conv.turns()[: args.start + args.turns], conv_id=conv.conv_id,
                              start=args.start)
        print(f"{conv.conv_id}: {len(rows)} scored turns so far", file=sys.stderr)
    (out / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"command": " ".join(["scripts/next_turn_nll.py", *(argv if argv is not None else sys.argv[1:])]),
               "conversations": [c.conv_id for c in convs], "turns_per_conversation": args.turns, "start": args.start,
               "recipes": recipes, "nll": summarise(rows, recipes)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print("| mode | next-utterance NLL (nats/token) [95% CI] | minus none [95% CI] |\n| --- | --- | --- |")
    for mode in ["none", *recipes]:
        s = summary["nll"][mode]
        d = summary["nll"].get(f"diff:{mode}")
        diff = f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]" if d else ""
        print(f"| {mode} | {s['mean']:.3f} [{s['low']:.3f}, {s['high']:.3f}] | {diff} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
