"""Training the writer with the language model frozen.

One step: draw episodes, roll each one's engram through its turns with the
recipe's own `roll` (gradients flow through every cycle back to the first
turn), ask the episode's question with the engram written by the recipe's
reader, and minimise the teacher-forced NLL of the target. Only the writer's
parameters have requires_grad; the model's never change (a test checks bit
identity).

    trainer = Trainer(engine, bank, data, seed=0, steps=600)
    trainer.train_step() -> {"step", "loss", "qa", "recon", "k_max"}
    trainer.save(path) / Trainer.resume(path, ...)
"""

from __future__ import annotations

import hashlib
import json
import random

import torch
import torch.nn.functional as F

from companion.batched.rows import padded, writing
from companion.engine.config import ConfigError
from companion.engine.recipes.base import Placement

from .episodes import KINDS, QUIET, Curriculum, Episode

RECON_TARGET_TOKENS = 24  # a statement is cut here: the engram need not hold a whole paragraph


def answer_losses(engine, engrams: list, prompts: list[str], targets: list[str],
                  avoid: list[list[int]] | None = None, avoid_weight: float = 0.0) -> torch.Tensor:
    """[B] per-token NLL of each target after its prompt, the engram placed by the recipe's reader.

    Differentiable in the engrams. Rows are left-padded so every target ends at the
    last column, and logits are kept only for the target columns. avoid: per row the
    token ids the reply should not open with; each row's loss gains
    avoid_weight * -log(1 - p(opening with one of them)) (unlikelihood).
    """
    tok = engine.tokenizer
    tgts = [tok(t, add_special_tokens=False)["input_ids"][:RECON_TARGET_TOKENS] for t in targets]
    places = []
    for e, prompt, tgt in zip(engrams, prompts, tgts):
        p = engine.place(e, prompt)
        places.append(Placement(p.ids + tgt, p.slots, p.vectors, p.depth, p.content))
    embeds, mask, offsets = padded([engine] * len(places), places, left=True)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    keep = max(len(t) for t in tgts) + 1
    with writing([engine] * len(places), places, offsets):
        logits = engine.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False,
                              logits_to_keep=keep).logits
    out = []
    for i, tgt in enumerate(tgts):
        if not tgt:  # nothing to say (a model's own empty reply): no loss, and no NaN in the mean
            out.append(logits[i, -1, 0].float() * 0)
            continue
        pred = logits[i, keep - 1 - len(tgt): keep - 1].float()
        loss = F.cross_entropy(pred, torch.tensor(tgt, device=pred.device))
        if avoid_weight and avoid and avoid[i]:
            p = torch.softmax(pred[0], dim=-1)[avoid[i]].sum().clamp(max=1 - 1e-6)
            loss = loss - avoid_weight * torch.log1p(-p)
        out.append(loss)
    return torch.stack(out)


class Trainer:
    def __init__(self, engine, bank, data, *, seed: int, steps: int, batch: int = 8, lr: float = 3e-3,
                 params: dict | None = None, avoid_weight: float = 0.0):
        writer = engine.writer
        if not hasattr(writer, "roll") or not engine.reader.depth_is_layer:
            raise ConfigError(f"recipe {engine.config.recipe!r} is not trainable here: it needs a writer with "
                              "parameters (roll) and a reader that writes at layer L")
        for p in engine.model.parameters():
            p.requires_grad_(False)
        self.engine, self.bank, self.data, self.writer = engine, bank, data, writer
        self.seed, self.steps, self.batch, self.avoid_weight = seed, steps, batch, avoid_weight
        self.curriculum = Curriculum(steps)
        self.names = writer.param_names
        start = params or writer.init_params(engine.lm.hidden_size, seed=seed)
        self.params = {n: start[n].detach().clone().float().to(engine.lm.device).requires_grad_(True)
                       for n in self.names}
        self.opt = torch.optim.Adam([self.params[n] for n in self.names], lr=lr)
        self.step = 0
        self._own: dict[str, str] = {}

    def own_reply(self, prompt: str) -> str:
        """The frozen model's greedy reply to prompt with no memory: a quiet episode's target.
        One prompt per pass, so the reply does not depend on what it was batched with."""
        if prompt not in self._own:
            from companion.batched.batch import answer_many

            with torch.no_grad():
                self._own[prompt] = answer_many(self.engine, [None], [prompt],
                                                max_new_tokens=RECON_TARGET_TOKENS)[0]
        return self._own[prompt]

    def engram_of(self, ep: Episode) -> torch.Tensor:
        engram = None
        for j, t in enumerate(ep.turns):
            states, sur = self.bank.get(t, first=j == 0)
            engram = self.writer.roll(engram, states.to(self.engine.lm.device), sur, self.engine.config.slots,
                                      self.params)
        return engram

    def losses(self, episodes: list[Episode], *, avoid: bool = True) -> torch.Tensor:
        """[B] each episode's loss: its target's NLL (plus the unlikelihood term when avoid and the
        trainer has an avoid_weight; validation leaves it out, so its numbers compare across runs)."""
        targets = [self.own_reply(e.prompt) if e.kind == "quiet" and e.target == QUIET else e.target
                   for e in episodes]
        weight = self.avoid_weight if avoid else 0.0
        avoid_ids = [self.openings(e.avoid, t) for e, t in zip(episodes, targets)] if weight else None
        return answer_losses(self.engine, [self.engram_of(e) for e in episodes], [e.prompt for e in episodes],
                             targets, avoid_ids, weight)

    def openings(self, answer: str, reply: str) -> list[int]:
        """The first tokens a reply opening with `answer` would have (as written, capitalised, lower
        case, after a space), less the opening of the model's own reply."""
        if not answer:
            return []
        first = lambda text: (self.engine.tokenizer(text, add_special_tokens=False)["input_ids"] or [None])[0]
        ids = {first(v) for v in (answer, answer[:1].upper() + answer[1:], answer.lower(), " " + answer)}
        return sorted(ids - {first(reply), None})

    def train_step(self) -> dict:
        k_max = self.curriculum.k_max(self.step)
        eps = self.data.train.batch(self.seed, self.step, self.batch, k_max)
        losses = self.losses(eps)
        loss = losses.mean()
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([self.params[n] for n in self.names], 1.0)
        self.opt.step()
        self.step += 1
        by = {kind: [float(x) for x, e in zip(losses.detach(), eps) if e.kind == kind] for kind in KINDS}
        return {"step": self.step, "loss": float(loss.detach()), "k_max": k_max,
                **{kind: (sum(v) / len(v) if v else None) for kind, v in by.items()}}

    @torch.no_grad()
    def validate(self, ks=(1, 5, 10), per_k: int = 16, quiet: bool = True, nxt: bool = False) -> dict:
        """Mean answer NLL of held-out-template facts after k turns (fixed episodes); with quiet, also
        "quiet1": the NLL of the model's own no-memory reply to the question of a fact never told,
        one turn after a held-out fact (how far the engram pulls replies it was not asked about);
        with nxt, also "next": the NLL of the true next reply after up to 8 turns of its
        conversation minus its NLL with no memory (next episodes of the training sampler: the talk is
        the training talk)."""
        out = {}
        for k in (*ks, *(["quiet1"] if quiet else []), *(["next"] if nxt else [])):
            rng = random.Random(f"val:{self.seed}:{k}")
            eps = ([self.data.val.quiet_at(rng, 1) for _ in range(per_k)] if k == "quiet1"
                   else [self.data.train.next_at(rng, 7) for _ in range(per_k)] if k == "next"
                   else [self.data.val.draw_at(rng, k) for _ in range(per_k)])
            vals = []
            for s in range(0, len(eps), self.batch):
                part = eps[s:s + self.batch]
                vals += self.losses(part, avoid=False).tolist()
                if k == "next":  # as the chat-harm measure has it: the gain over no memory (negative: helps)
                    none = answer_losses(self.engine, [None] * len(part), [e.prompt for e in part],
                                         [e.target for e in part])
                    vals[-len(part):] = [a - b for a, b in zip(vals[-len(part):], none.tolist())]
            out[str(k)] = sum(vals) / len(vals)
        return out

    # -- checkpoints: safetensors only --------------------------------------------------
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        tensors = {f"param.{n}": self.params[n].detach().cpu().contiguous() for n in self.names}
        opt = self.opt.state_dict()
        for idx, st in opt["state"].items():
            for key, val in st.items():
                tensors[f"opt.{idx}.{key}"] = torch.as_tensor(val).detach().cpu().contiguous()
        meta = {"step": str(self.step), "seed": str(self.seed), "steps": str(self.steps),
                "param_groups": json.dumps(opt["param_groups"])}
        return tensors, meta

    def save(self, path) -> None:
        from safetensors.torch import save_file

        tensors, meta = self.state()
        save_file(tensors, str(path), metadata=meta)

    def load(self, path) -> None:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
            if int(meta["seed"]) != self.seed or int(meta["steps"]) != self.steps:
                raise ConfigError(f"{path} is a run with seed {meta['seed']} and {meta['steps']} steps; "
                                  f"this one has seed {self.seed} and {self.steps} steps: use another --out")
            with torch.no_grad():
                for n in self.names:
                    self.params[n].copy_(f.get_tensor(f"param.{n}"))
            state: dict = {}
            for key in f.keys():
                if key.startswith("opt."):
                    _, idx, name = key.split(".", 2)
                    state.setdefault(int(idx), {})[name] = f.get_tensor(key)
        self.opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
        self.step = int(meta["step"])

    def weights(self) -> dict[str, torch.Tensor]:
        return {n: self.params[n].detach().cpu().contiguous() for n in self.names}


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over each tensor's name and exact float32 bytes, in name order: two training runs made
    the same weights exactly when this matches (a weights file's own sha256 also covers its metadata,
    which holds the command line and so the --out folder).

    >>> tensors_digest({"a": torch.zeros(2)})[:12]
    '50edc2623446'
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode() + tensors[name].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def mix(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], share: float) -> dict[str, torch.Tensor]:
    """share * first + (1 - share) * second, name by name: two runs of one writer from the same start,
    averaged (a "soup"; select-chat is one: between a run that recalls loudly and one that keeps
    quiet but forgets, measured in docs/HISTORY.md).

    >>> mix({"a": torch.ones(2)}, {"a": torch.zeros(2)}, 0.25)["a"].tolist()
    [0.25, 0.25]
    """
    if set(first) != set(second) or any(first[n].shape != second[n].shape for n in first):
        raise ValueError("the two weights files hold different tensors: not runs of one writer")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be within [0, 1], not {share}")
    return {n: (share * first[n].float() + (1 - share) * second[n].float()).contiguous() for n in sorted(first)}


def smooth(values: list[float], window: int = 20) -> list[float]:
    """Trailing mean, for the loss curve.

    >>> smooth([1.0, 3.0, 5.0], window=2)
    [1.0, 2.0, 4.0]
    """
    out = []
    for i in range(len(values)):
        part = values[max(0, i - window + 1): i + 1]
        out.append(sum(part) / len(part))
    return out
