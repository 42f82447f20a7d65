#!/usr/bin/env python
"""Degradation over cycles: how well does each memory mode recall a planted fact after k turns?

    python scripts/degradation.py --quick --out runs/degradation-quick
    python scripts/degradation.py --out runs/degradation-full          # the full profile (GPU advised)
    python scripts/degradation.py --long --recipes select-keep select-chat --warmup 10 --out runs/long-w10
    python scripts/degradation.py --quick --recipes seed select-deep --out runs/dq-two
    python scripts/degradation.py --quick --recipes all --out runs/dq-all
    python scripts/degradation.py --quick --recipes all --reuse runs/dq-all --out runs/dq-all2  # a recipe added

Every recipe gets its own engine over the one loaded model and lives each trial
itself; the report has rows engram:<recipe> and foreign:<recipe> per recipe
beside the recipe-free text modes, engram+retrieval:<recipe> for the product's
default recipe (or the first; --retrieval-recipes NAME... | all to choose), and
for every row and k the recall and the teacher-forced NLL of the correct answer.
Interrupted runs resume from DIR/trials.jsonl (same recipes and settings only).
Outputs: results.json, recall.md, recall.png, nll.png, diagnostics.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None) -> int:
    from companion.eval.harness import FULL, LONG, QUICK
    from companion.eval.harness.facts import FACT_SETS
    from companion.eval.modes import ALIASES, KINDS, MODE_NAMES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/degradation", help="output folder (resumes what is there)")
    p.add_argument("--model", default=None, help="model to load (default: the embedded SmolLM2-135M)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trials", type=int, default=None, help=f"trials per cell (quick {QUICK['trials']}, full {FULL['trials']})")
    p.add_argument("--cycles", type=int, nargs="+", default=None, help="checkpoints k (distractor turns)")
    p.add_argument("--modes", nargs="+", default=list(MODE_NAMES), choices=[*KINDS, *ALIASES],
                   help="mode kinds; engram, foreign and engram+retrieval get one row per recipe")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--recipes", nargs="+", default=None, metavar="NAME",
                       help="recipes to compare in one run, or 'all' (default: seed); the first answers the text modes")
    which.add_argument("--recipe", default=None, metavar="NAME", help="one recipe (same as --recipes NAME)")
    p.add_argument("--retrieval-recipes", nargs="+", default=None, metavar="NAME",
                   help="recipes that get an engram+retrieval row, or 'all' (default: the product's default "
                        "recipe when it is compared, else the first; those rows are the longest prompts to ask)")
    p.add_argument("--no-nll", action="store_true", help="skip the teacher-forced answer NLL (saves a forward per ask)")
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--quick", action="store_true", help="the quick profile (under 10 min on 2 CPU cores)")
    speed.add_argument("--long", action="store_true",
                       help=f"the long profile: {LONG['trials']} trials to k = {max(LONG['cycles'])} (how long a fact is held)")
    p.add_argument("--data", default=None, help="LoCoMo folder for distractors, or 'generated'")
    p.add_argument("--layer", type=int, default=None, help="engram layer of every recipe (default 16)")
    p.add_argument("--slots", type=int, default=None, help="engram vectors (default 32)")
    p.add_argument("--warmup", type=int, default=0, metavar="W",
                   help="distractor turns lived before the fact, so it arrives in a full engram (default 0)")
    p.add_argument("--facts", default="harness", choices=FACT_SETS,
                   help="planted facts: the harness's 18 templates (reported), or 'dev': the training templates, "
                        "for tuning a recipe without looking at the reported facts")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--context-chars", type=int, default=6000, help="budget of the text modes")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads; 1 is far faster on a CPU shared with other jobs")
    p.add_argument("--batch", type=int, default=1,
                   help="trials lived side by side in one forward pass (same records, more throughput)")
    p.add_argument("--reuse", default=None, metavar="DIR",
                   help="take the text-mode rows and the rows of recipes with the same config from the run in DIR "
                        "(same settings, model and distractors); only the other recipes run")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--oracle", action="store_true",
                   help="also the format's ceiling at k=0: rows oracle:<reader> (vectors optimised per fact)")
    p.add_argument("--oracle-readers", nargs="+", default=None, help="oracle readers (default: all)")
    p.add_argument("--oracle-steps", type=int, default=200, help="Adam steps at most per oracle fact")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from companion import EngramConfig, Engine, load_model
    from companion.eval.harness import DistractorPool, HarnessError, RunSettings, run
    from companion.eval.modes import recipe_list, retrieval_choice
    from companion.app.settings import cache_dir

    profile = QUICK if args.quick else LONG if args.long else FULL
    trials = args.trials or profile["trials"]
    cycles = args.cycles or profile["cycles"]
    shape = {k: v for k, v in (("layer", args.layer), ("slots", args.slots)) if v is not None}
    try:
        recipes = recipe_list([args.recipe] if args.recipe else (args.recipes or ["seed"]))
        settings = RunSettings(seed=args.seed, cycles=cycles, modes=args.modes, max_new_tokens=args.max_new_tokens,
                               context_chars=args.context_chars, nll=not args.no_nll, warmup=args.warmup,
                               facts=args.facts,
                               retrieval_recipes=retrieval_choice(args.retrieval_recipes, recipes))
        configs = [EngramConfig(**shape, recipe=r) for r in recipes]  # refuses a bad layer before the load
        pool = DistractorPool.load(args.data)
        lm = load_model(args.model, cache_root=cache_dir())
        engines = [Engine(lm, c) for c in configs]
        results = run(engines, settings, trials, args.out, pool=pool, profile="quick" if args.quick else "long" if args.long else "full",
                      command=" ".join(shlex.quote(a) for a in ["scripts/degradation.py", *sys.argv[1:]]),
                      progress=not args.no_progress, batch=args.batch, reuse=args.reuse)
    except (HarnessError, FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.oracle:
        from companion.eval.harness import oracle as O
        from companion.eval.harness.ceiling import merge_oracle, run_oracle
        from companion.eval.harness.report import write_reports

        readers = args.oracle_readers or list(O.ORACLE_READERS)
        records = run_oracle(lm, trials=trials, seed=args.seed, out=args.out, readers=readers,
                             steps=args.oracle_steps, layer=args.layer or 16, slots=args.slots or 32,
                             max_new_tokens=args.max_new_tokens,
                             on_record=lambda r: print(f"{r['reader']} trial {r['trial']}: "
                                                       f"{'right' if r['correct'] else 'wrong'}", file=sys.stderr))
        results = merge_oracle(results, records)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
        write_reports(results, args.out)
    print(open(os.path.join(args.out, "recall.md")).read())
    print(f"wrote {args.out}/results.json, recall.md, recall.png, nll.png, diagnostics.png "
          f"({results['trials']} trials, {results['seconds_this_invocation']} s this run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
