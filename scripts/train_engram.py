#!/usr/bin/env python
"""Train a recipe's writer with the language model frozen; resumable, deterministic for a seed.

    python scripts/train_engram.py --recipe select-trained --steps 600 --seed 0 --out runs/train
    python scripts/train_engram.py --minutes 20 --out runs/train-short      # stop at a time budget

The turns' layer-L states are computed once (DIR/bank.safetensors), then each
step rolls a batch of episodes through the writer and backpropagates the
answer (and statement-reconstruction) NLL through the frozen model. Outputs in
DIR: checkpoint.safetensors (resumes), history.jsonl, loss.png and
weights.safetensors (the writer's parameters with the command in their
metadata). To ship: copy weights.safetensors to
companion/engine/recipes/weights/RECIPE.safetensors and record its sha256 in the
recipe's Weights (trained.py, mapped.py). Or try them without shipping:
COMPANION_TRAINED_WEIGHTS=DIR/weights.safetensors scripts/degradation.py --recipe select-trained ...
(COMPANION_MAPPED_WEIGHTS for select-mapped).
The number of steps decides the result: --minutes only stops early (the printed
step count and `--steps N` reproduce what was saved).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path


def _plot(history: list[dict], out: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no loss.png", file=sys.stderr)
        return
    from companion.training.loop import smooth

    steps = [h for h in history if "loss" in h]
    vals = [h for h in history if "val" in h]
    fig, ax = plt.subplots(figsize=(7, 4))
    if steps:
        ax.plot([h["step"] for h in steps], smooth([h["loss"] for h in steps]), label="train loss (20-step mean)")
    for k in (vals[0]["val"] if vals else {}):
        label = (f"held-out answer NLL, k={k}" if k.isdigit() else "true next reply: NLL minus no memory's"
                 if k == "next" else "own no-memory reply NLL, unrelated question, k=1")
        ax.plot([h["step"] for h in vals], [h["val"][k] for h in vals], marker="o", label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("NLL (nats per token)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="select-trained", help="a recipe with a trainable writer")
    p.add_argument("--out", required=True, help="output folder (resumes what is there)")
    p.add_argument("--model", default=None, help="model to load (default: the embedded SmolLM2-135M)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=600, help="optimizer steps (decides the curriculum and result)")
    p.add_argument("--minutes", type=float, default=None, help="stop (and save) after this long")
    p.add_argument("--batch", type=int, default=8, help="episodes per step")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--facts", type=int, default=300, help="planted training facts")
    p.add_argument("--talk", type=int, default=400, help="chit-chat turns (plus part of conv-26)")
    p.add_argument("--chat-share", type=float, default=0.0,
                   help="part of the episodes that end in an unrelated chat line, its real reply the target "
                        "(meant to keep the engram out of unrelated replies; measured: it did not, docs/HISTORY.md)")
    p.add_argument("--absent-share", type=float, default=0.0,
                   help="part of the episodes that end in the question of a fact never told, the target "
                        "\"You haven't told me that.\" (meant to keep the engram from answering what it does not hold; "
                        "measured: recall and intrusions fell together, docs/HISTORY.md)")
    p.add_argument("--quiet-share", type=float, default=0.0,
                   help="part of the episodes that end in a prompt the engram was not told about (half a never-told "
                        "fact's question, half an unrelated chat line), the model's own no-memory reply the target")
    p.add_argument("--next-share", type=float, default=0.0,
                   help="part of the episodes that replay a real conversation from its start and end in its next "
                        "user line, the reply the person gave the target (the chat-harm measure, trained on "
                        "training talk)")
    p.add_argument("--avoid-weight", type=float, default=0.0,
                   help="in quiet episodes, also push down the chance that the reply opens with the answer the "
                        "engram holds (weight of that unlikelihood term)")
    p.add_argument("--data", default=None, help="LoCoMo dev folder (only conv-26 is read)")
    p.add_argument("--eval-every", type=int, default=50, help="held-out validation every this many steps")
    p.add_argument("--evaluate", metavar="WEIGHTS", default=None,
                   help="train nothing: print the held-out validation NLLs (k=1, 5, 10, quiet1 and next) of this weights "
                        "file, e.g. a shipped recipe's, on the --out folder's training data")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    import torch
    from safetensors.torch import save_file
    from tqdm import tqdm

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from companion import EngramConfig, Engine, load_model
    from companion.engine.config import ConfigError
    from companion.engine.recipes import get_recipe
    from companion.app.settings import cache_dir
    from companion.training import Trainer, TurnBank, build_data
    from companion.training.corpus import CorpusError

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(shlex.quote(a) for a in ["scripts/train_engram.py", *(argv if argv is not None else sys.argv[1:])])
    try:
        lm = load_model(args.model, cache_root=cache_dir())
        config = EngramConfig(recipe=args.recipe)
        writer = get_recipe(args.recipe).writer
        if not hasattr(writer, "init_params"):
            raise ConfigError(f"recipe {args.recipe!r} has no trainable writer")
        engine = Engine(lm, config, fixed=writer.init_params(lm.hidden_size, seed=args.seed))
        data = build_data(seed=args.seed, facts=args.facts, talk=args.talk, locomo=args.data,
                          chat_share=args.chat_share, absent_share=args.absent_share,
                          quiet_share=args.quiet_share, next_share=args.next_share)
        bank_path = out / "bank.safetensors"
        bank = TurnBank.load(bank_path) if bank_path.is_file() else None
        if bank is None or bank.turns != data.turns:
            jobs = len(data.turns) + len(data.firsts)
            with tqdm(total=jobs, desc="turn states", disable=args.no_progress, file=sys.stderr) as bar:
                bank = TurnBank.build(engine, data.turns, data.firsts, progress=bar.update)
            bank.save(bank_path)
        if args.evaluate:
            from safetensors.torch import load_file

            given = load_file(args.evaluate)
            trainer = Trainer(engine, bank, data, seed=args.seed, steps=args.steps, batch=args.batch,
                              params={n: given[n] for n in writer.param_names})
            print(json.dumps({"weights": args.evaluate, "val": trainer.validate(nxt=True)}))
            return 0
        trainer = Trainer(engine, bank, data, seed=args.seed, steps=args.steps, batch=args.batch, lr=args.lr,
                          avoid_weight=args.avoid_weight)
        ckpt, hist_path = out / "checkpoint.safetensors", out / "history.jsonl"
        if ckpt.is_file():
            trainer.load(ckpt)
            print(f"resumed at step {trainer.step}", file=sys.stderr)
    except (ConfigError, CorpusError, KeyError, ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    history = [json.loads(x) for x in hist_path.read_text().splitlines()] if hist_path.is_file() else []
    history = [h for h in history if h.get("step", 0) <= trainer.step]

    def log(rec: dict) -> None:
        history.append(rec)
        hist_path.write_text("".join(json.dumps(h) + "\n" for h in history))

    if trainer.step == 0 and not any("val" in h for h in history):
        log({"step": 0, "val": trainer.validate(nxt=bool(args.next_share))})  # the untrained writer: (almost) select-sticky
    started = time.perf_counter()
    with tqdm(total=args.steps, initial=trainer.step, desc="training", disable=args.no_progress,
              file=sys.stderr) as bar:
        while trainer.step < args.steps:
            rec = trainer.train_step()
            log(rec)
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", k_max=rec["k_max"])
            if trainer.step % args.eval_every == 0 or trainer.step == args.steps:
                log({"step": trainer.step, "val": trainer.validate(nxt=bool(args.next_share))})
                trainer.save(ckpt)
                _plot(history, out)
            if args.minutes and time.perf_counter() - started > 60 * args.minutes:
                print(f"time budget reached at step {trainer.step}", file=sys.stderr)
                break
    trainer.save(ckpt)
    _plot(history, out)
    meta = {"recipe": args.recipe, "seed": str(args.seed), "steps": str(trainer.step), "command": command,
            "model": lm.name, "fingerprint": lm.fingerprint}
    save_file(trainer.weights(), str(out / "weights.safetensors"), metadata=meta)
    vals = [h for h in history if "val" in h]
    from companion.training.loop import tensors_digest

    print(json.dumps({"steps": trainer.step, "tensors_sha256": tensors_digest(trainer.weights()),
                      "first_val": vals[0]["val"] if vals else None,
                      "last_val": vals[-1]["val"] if vals else None}))
    print(f"wrote {out}/weights.safetensors, checkpoint.safetensors, history.jsonl, loss.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
