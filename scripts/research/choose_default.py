#!/usr/bin/env python
"""Which recipe should new sessions get? The rule of companion/eval/harness/verdict.py on saved runs.

    python scripts/research/choose_default.py --degradation runs/held-chat --next-turn runs/next-turn-chat --base select-sticky

Reads a degradation run's results.json (recall and answer NLL at k, and the
intrusion counts when it had the foreign-transcript mode) and, optionally, a
scripts/next_turn_nll.py run's summary.json (the chat guard), and prints the
rule's choice against --base with one reason line per other recipe.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--degradation", type=Path, required=True, help="a scripts/degradation.py --out folder")
    p.add_argument("--next-turn", type=Path, default=None, help="a scripts/next_turn_nll.py --out folder")
    p.add_argument("--base", default=None, help="the recipe to beat (default: the product's default)")
    p.add_argument("--k", default="1", help="the checkpoint the rule reads")
    p.add_argument("--seed", type=int, default=0, help="unused (nothing is drawn); kept for the scripts' convention")
    p.add_argument("--out", type=Path, default=None, help="also write the verdict here (markdown)")
    args = p.parse_args(argv)

    from companion.eval.harness.verdict import verdict_lines
    from companion.engine.recipes.base import DEFAULT

    base = args.base or DEFAULT
    try:
        results = json.loads((args.degradation / "results.json").read_text())
        harm = None
        if args.next_turn:
            nll = json.loads((args.next_turn / "summary.json").read_text())["nll"]
            harm = {key.split(":", 1)[1]: d for key, d in nll.items() if key.startswith("diff:")}
        if args.k not in results["recall"].get(f"engram:{base}", {}):
            raise KeyError(f"{args.degradation} has no engram:{base} row at k={args.k}")
        lines = verdict_lines(results, args.k, base=base, harm=harm)
        if not lines:
            raise ValueError(f"{args.degradation} compares fewer than two recipes: nothing to choose")
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
