#!/usr/bin/env python
"""Is a held fact unreadable because of the other slots? Ask with parts of the engram.

    python scripts/research/slot_ablation.py --recipe select-user --warmup 10 --cycles 0 5 --trials 6 --out runs/ablation

The harness's own trials (same seed: the same facts and distractors as
scripts/degradation.py), lived through one token-keeping recipe; at each
checkpoint the question is asked (greedy, as the harness asks) with:

- all: the engram as it is (the harness's engram row);
- fact: only the slots written by the fact's turn (traced by exact equality,
  companion.eval.harness.trace), in their order;
- rest: every slot except those;
- near-M: the M slots whose states are closest (cosine) to the question's own
  layer-L states, a reading the companion could do without knowing the fact;
- statement: the layer-L states of the fact's whole user text instead of the
  engram (the one-turn reading of ../shared/DESIGN.md), and
- statement+rest: those in place of the fact's slots, beside every other slot
  (may exceed the slot count: a diagnostic of context against clutter).

Prints recall and the answer's teacher-forced NLL per condition and k; writes OUT/ablation.json.
A diagnostic: which slots the reader needs, not a recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="select-user")
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--cycles", type=int, nargs="+", default=[0, 5])
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--near", type=int, nargs="+", default=[4, 8], help="slot counts for the near-M conditions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--model", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="runs/ablation")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from companion import EngramConfig, Engine, load_model
    from companion.engine.chat_format import chat_ids
    from companion.eval.harness import DistractorPool, RunSettings, Trial, is_correct
    from companion.eval.harness.nll import nll_one
    from companion.eval.harness.trace import trace_session
    from companion.eval.harness.trial import ACK
    from companion.engine.recipes.writers import sink_positions, state_part
    from companion.app.settings import cache_dir

    lm = load_model(args.model, cache_root=cache_dir())
    engine = Engine(lm, EngramConfig(recipe=args.recipe))
    cols = engine.writer.extra_columns
    pool = DistractorPool.load(None)
    settings = RunSettings(seed=args.seed, cycles=args.cycles, warmup=args.warmup)
    conditions = ["all", "fact", "rest", *[f"near-{m}" for m in args.near], "statement", "statement+rest"]
    rows = []
    for i in range(args.trials):
        t = Trial([engine], settings, pool, i)
        w = len(t.warmup)
        turns = [*t.warmup, (t.fact.statement, ACK), *t.distractors[:max(args.cycles)]]
        labels = trace_session(engine, turns)
        q = t.fact.question
        qs = engine.states_of(None, chat_ids(engine.tokenizer, q)).float()
        qs = qs[[j for j in range(qs.shape[0]) if j not in set(sink_positions(qs))]].mean(0)
        placed = engine.place(None, t.fact.statement, ACK)
        said = engine.turn_states(None, t.fact.statement, ACK)[placed.content:placed.user_end].float()
        said = torch.cat([said, said.new_zeros((said.shape[0], cols))], dim=1)  # salience columns unused
        for k in args.cycles:
            engram = None
            for user, reply in turns[: w + k + 1]:
                engram = engine.absorb(engram, user, reply).engram
            vecs = state_part(engram, cols).float()
            fact = [j for j, s in enumerate(labels[w + k]) if s is not None and s.turn == w]
            sims = torch.nn.functional.cosine_similarity(vecs, qs[None], dim=-1)
            picks = {"all": list(range(engram.shape[0])), "fact": fact,
                     "rest": [j for j in range(engram.shape[0]) if j not in fact]}
            for m in args.near:
                picks[f"near-{m}"] = sorted(sims.topk(min(m, len(sims))).indices.tolist())
            rest = picks["rest"]
            at = min(fact) if fact else len(rest)
            before = [j for j in rest if j < at]
            extra = {"statement": said,
                     "statement+rest": torch.cat([engram[before], said, engram[[j for j in rest if j > at]]])}
            picks["statement"], picks["statement+rest"] = [], rest
            for name in conditions:
                sub = extra[name] if name in extra else (engram[picks[name]] if picks[name] else None)
                reply = engine.run_turn(sub, q, max_new_tokens=args.max_new_tokens, repetition_penalty=1.0,
                                        update=False).reply
                nll = nll_one(engine, sub, q, t.fact.answer)
                row = {"trial": i, "k": k, "condition": name, "slots": 0 if sub is None else sub.shape[0],
                       "fact_slots_in": len(set(picks[name]) & set(fact)), "reply": reply,
                       "correct": is_correct(reply, t.fact.answer, t.fact.aliases), **nll}
                rows.append(row)
                print(f"trial {i} k={k} {name:8s} {row['slots']:2d} slots ({row['fact_slots_in']} fact) "
                      f"{'OK ' if row['correct'] else '   '} nll {row.get('nll', float('nan')):.2f} {reply!r}",
                      file=sys.stderr)
    print(f"{args.recipe}, warm-up {args.warmup}, {args.trials} trials: recall and mean answer NLL")
    for k in args.cycles:
        for name in conditions:
            got = [r for r in rows if r["k"] == k and r["condition"] == name]
            nlls = [r["nll"] for r in got if r.get("nll") is not None]
            print(f"  k={k:<3d} {name:8s} {sum(r['correct'] for r in got)}/{len(got)}  "
                  f"NLL {sum(nlls) / max(1, len(nlls)):.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps({"command": " ".join(["scripts/research/slot_ablation.py", *sys.argv[1:]]),
                                                   "rows": rows}, indent=1))
    print(f"wrote {out}/ablation.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
