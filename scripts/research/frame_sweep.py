#!/usr/bin/env python
"""Does the framing text around a framed reader's slots change what the engram recalls?

    python scripts/research/frame_sweep.py --variant said="Here is what I said before:" \
        --variant quoted='Earlier I told you: "|"\nNow answer briefly: ' --out runs/frames

Each --variant NAME=FRAME[|LEAD] is the base recipe (default select-sticky) with its reader's frame
(the text before the slots) and, if given, its lead (between the slots and the new input) replaced;
it lives the degradation harness's trials beside the base recipe, as a recipe named BASE@NAME
registered for this run only. The facts default to the dev set (the training templates), so
frames are compared away from the facts the results report; pick one here, then measure it once
with `scripts/degradation.py` on the harness's facts. Writes the harness's usual outputs to --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_variant(text: str) -> tuple[str, str, str | None]:
    """NAME=FRAME[|LEAD] -> (name, frame, lead or None); backslash-n in the texts is a newline.

    >>> parse_variant('q=Earlier I told you: "|"\\\\nNow answer briefly: ')
    ('q', 'Earlier I told you: "', '"\\nNow answer briefly: ')
    """
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest or "@" in name:
        raise ValueError(f"--variant {text!r}: expected NAME=FRAME or NAME=FRAME|LEAD")
    frame, bar, lead = rest.replace("\\n", "\n").partition("|")
    return name, frame, (lead if bar else None)


def main(argv: list[str] | None = None) -> int:
    from companion.eval.harness.facts import FACT_SETS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", action="append", required=True, metavar="NAME=FRAME[|LEAD]")
    p.add_argument("--recipe", default="select-sticky", help="the base recipe (its reader must be framed)")
    p.add_argument("--facts", default="dev", choices=FACT_SETS)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--cycles", type=int, nargs="+", default=[0, 1])
    p.add_argument("--modes", nargs="+", default=["engram", "none", "transcript"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--model", default=None)
    p.add_argument("--out", default="runs/frame-sweep")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from companion import EngramConfig, Engine, load_model
    from companion.eval.harness import DistractorPool, HarnessError, RunSettings, run
    from companion.engine.recipes import Recipe, get_recipe, register
    from companion.app.settings import cache_dir

    try:
        base = get_recipe(args.recipe)
        if not hasattr(base.reader, "frame"):
            raise ValueError(f"recipe {args.recipe!r} has no framed reader")
        names = [args.recipe]
        for name, frame, lead in map(parse_variant, args.variant):
            reader = dataclasses.replace(base.reader, frame=frame, **({"lead": lead} if lead is not None else {}))
            recipe = register(Recipe(f"{base.name}@{name}", f"{base.name} framed {frame!r} ... {reader.lead!r}",
                                     base.writer, reader, base.fixed))
            names.append(recipe.name)
        settings = RunSettings(seed=args.seed, cycles=args.cycles, modes=args.modes, facts=args.facts)
        lm = load_model(args.model, cache_root=cache_dir())
        engines = [Engine(lm, EngramConfig(recipe=n)) for n in names]
        results = run(engines, settings, args.trials, args.out, pool=DistractorPool.load(), profile="frame-sweep",
                      command=" ".join(shlex.quote(a) for a in ["scripts/research/frame_sweep.py", *sys.argv[1:]]),
                      progress=False, batch=args.batch)
    except (HarnessError, ValueError, KeyError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for n in names:
        print(f"{n}: frame {get_recipe(n).reader.frame!r}, lead {get_recipe(n).reader.lead!r}")
    print(open(os.path.join(args.out, "recall.md")).read())
    print(f"wrote {args.out} ({results['trials']} trials, {results['seconds_this_invocation']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
