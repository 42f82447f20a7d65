"""Training select-keep's value scorer, the language model frozen, on what later questions need.

The reader writes the engram at layer L, so a turn's layer-L states do not depend
on the engram (training.bank): every turn's candidate states are computed once,
and the scorer learns from labels on them, with no forward pass per step.

Labels, from nothing any evaluation reads:
- a planted fact of our own templates (training.facts), said alone or beside a
  line of small talk: its statement's tokens 1, the small talk's 0;
- conv-26 of LoCoMo: a line that one of its questions cites as evidence
  (categories 1-4) `EVIDENCE`, any other line 0;
- chitchat-dataset lines: 0.

The loss is a weighted binary cross-entropy per token (positives and negatives
weighted to equal mass). `simulate` then lives banked conversations through
`Retained.roll` itself for up to 100 turns and reports how long a planted fact's
tokens stay, the measure the scorer's validation is judged by.

    turns = labelled_turns(seed=0, facts=600, talk=1500)
    bank = LabelledBank.build(engine, turns)
    curve = train_value(bank, params, steps=300, seed=0)
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from companion.corpora.conversations import clip, default_data_path
from companion.engine.recipes.retention import value_scores, word_ids

from .bank import TurnBank
from .corpus import TRAIN_CONVERSATION, chitchat_turns
from .facts import ACKS, make_train_fact

EVIDENCE = 0.6  # a cited line matters, but less surely than a planted fact's own words


@dataclass(frozen=True)
class Labelled:
    user: str
    reply: str
    kind: str  # "fact", "evidence" or "talk"
    span: tuple[int, int] = (0, 0)  # characters of `user` labelled `target` (the whole text for evidence)
    target: float = 0.0
    held_out: bool = False  # a fact of training.facts.HELD_OUT templates: validation only
    answer: str = ""


def conv26_lines(folder: Path | None = None) -> list[tuple[str, str, bool]]:
    """(line, next line, cited as evidence) for each line of conv-26 followed by the other speaker's."""
    data = json.loads((Path(folder or default_data_path()) / f"{TRAIN_CONVERSATION}.json").read_text())
    cited = {e for q in data.get("qa", []) if q.get("category") in (1, 2, 3, 4) for e in q.get("evidence", [])}
    out, n = [], 1
    while f"session_{n}" in data:
        lines = [x for x in data[f"session_{n}"] if x.get("text")]
        for a, b in zip(lines, lines[1:]):
            if a.get("speaker") != b.get("speaker"):
                out.append((clip(a["text"]), clip(b["text"]), a.get("dia_id") in cited))
        n += 1
    return out


def labelled_turns(*, seed: int, facts: int, talk: int, chitchat: Path | None = None,
                   locomo: Path | None = None) -> list[Labelled]:
    """Facts (a third alone, a third after small talk, a third before it), conv-26 and chit-chat lines."""
    rng = random.Random(f"retention:{seed}")
    chat = [pair for run in chitchat_turns(talk, rng, chitchat) for pair in run]
    small = [u for u, _ in chat if 10 < len(u) < 120] or ["I had a long day at work."]
    turns = [Labelled(u, r, "talk") for u, r in chat]
    turns += [Labelled(u, r, "evidence" if cited else "talk", (0, len(u)), EVIDENCE if cited else 0.0)
              for u, r, cited in conv26_lines(locomo)]
    for n in range(facts):
        held = n % 8 == 0
        fact = make_train_fact(rng, held_out=held)
        how, other = n % 3, rng.choice(small)
        if how == 0:
            user, span = fact.statement, (0, len(fact.statement))
        elif how == 1:
            user = f"{other} {fact.statement}"
            span = (len(other) + 1, len(user))
        else:
            user, span = f"{fact.statement} {other}", (0, len(fact.statement))
        turns.append(Labelled(user, rng.choice(ACKS), "fact", span, 1.0, held, fact.answer))
    return turns


def token_targets(tokenizer, turn: Labelled, m: int) -> torch.Tensor:
    """[m] per-candidate targets: the candidates are the user text's tokens, so a character span maps
    to the tokens of its prefix and its end (a token on the boundary goes with what it mostly is)."""
    out = torch.zeros(m)
    if turn.target == 0.0:
        return out

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    a, b = count(turn.user[: turn.span[0]].rstrip()), count(turn.user[: turn.span[1]])
    out[min(a, m): min(b, m)] = turn.target
    return out


@dataclass
class LabelledBank:
    turns: list[Labelled]
    states: list[torch.Tensor]  # [m, H] candidate states per turn
    surprise: list[torch.Tensor]  # [m]
    words: list[list[int]]  # [m] word ids
    targets: list[torch.Tensor]  # [m]

    @classmethod
    def build(cls, engine, turns: list[Labelled], progress=None) -> "LabelledBank":
        """Every turn laid out behind a full engram (the layer-L states do not see it), through the
        engine's own reader and candidate rule."""
        bank = TurnBank.build(engine, [(t.user, t.reply) for t in turns], set(), progress=progress)
        states, sur, words, targets = [], [], [], []
        for i, t in enumerate(turns):
            s, u = bank.get(i, first=False)
            states.append(s)
            sur.append(torch.tensor(u))
            words.append(word_ids(bank.words[(i, False)]))
            targets.append(token_targets(engine.tokenizer, t, s.shape[0]))
        return cls(turns, states, sur, words, targets)

    def split(self) -> tuple[list[int], list[int]]:
        """Turn indices for training and validation: validation holds the HELD_OUT facts and every
        eighth other turn."""
        train, val = [], []
        for i, t in enumerate(self.turns):
            (val if t.held_out or (t.kind != "fact" and i % 8 == 0) else train).append(i)
        return train, val


def value_loss(bank: LabelledBank, idx: list[int], params: dict) -> torch.Tensor:
    """Weighted BCE over the tokens of turns idx: positive and negative mass equal."""
    logits = torch.cat([value_scores(bank.states[i], bank.surprise[i], params) for i in idx])
    target = torch.cat([bank.targets[i] for i in idx])
    pos = target.sum().clamp_min(1.0)
    neg = (1 - target).sum().clamp_min(1.0)
    weight = target / pos + (1 - target) / neg
    return (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum() / 2


def train_value(bank: LabelledBank, params: dict[str, torch.Tensor], *, steps: int, seed: int, lr: float = 3e-3,
                batch: int = 64, log=None) -> list[dict]:
    """Adam on the value parameters only (the map's stay as given); returns the loss curve."""
    names = [n for n in params if n.startswith("v_")]
    for n in names:
        params[n] = params[n].clone().requires_grad_(True)
    opt = torch.optim.Adam([params[n] for n in names], lr=lr)
    train, val = bank.split()
    rng = random.Random(f"value:{seed}")
    curve = []
    for step in range(1, steps + 1):
        loss = value_loss(bank, rng.sample(train, min(batch, len(train))), params)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == steps:
            with torch.no_grad():
                point = {"step": step, "train": round(float(loss), 4), "val": round(float(value_loss(bank, val, params)), 4)}
            curve.append(point)
            if log:
                log(point)
    for n in names:
        params[n] = params[n].detach()
    return curve


def simulate(writer, bank: LabelledBank, params: dict, *, warmup: int, cycles: list[int], trials: int, seed: int,
             slots: int = 32) -> list[dict]:
    """Live `trials` conversations through writer.roll: `warmup` talk turns, a held-out fact, then
    max(cycles) talk turns. Per trial: the share of the fact's statement tokens in the engram at each
    k, and the first k at which none is left (None: some kept to the end)."""
    from companion.engine.recipes.mapped import nudge

    _, val = bank.split()
    facts = [i for i in val if bank.turns[i].kind == "fact"]
    talk = [i for i, t in enumerate(bank.turns) if t.kind != "fact"]
    rng = random.Random(f"simulate:{seed}")
    out = []
    with torch.no_grad():
        for trial in range(trials):
            f = facts[trial % len(facts)]
            start = rng.randrange(len(talk))
            lived = [talk[(start + j) % len(talk)] for j in range(warmup)] + [f] + \
                [talk[(start + warmup + j) % len(talk)] for j in range(max(cycles))]
            # The fact's rows as the writer would store them (each state nudged by the map when it enters).
            fact_rows = nudge(bank.states[f][bank.targets[f] > 0], params)
            engram, kept, left = None, {}, None
            for step, i in enumerate(lived):
                engram = writer.roll(engram, bank.states[i], bank.surprise[i].tolist(), bank.words[i], slots, params)
                if step < warmup:
                    continue
                k = step - warmup
                share = held_share(engram, fact_rows)
                if share == 0.0 and left is None:
                    left = k
                if k in cycles:
                    kept[k] = share
            out.append({"trial": trial, "fact": bank.turns[f].user, "kept": kept, "left_at": left,
                        "fact_tokens": int(fact_rows.shape[0])})
    return out


def held_share(engram: torch.Tensor, rows: torch.Tensor) -> float:
    """The share of `rows` [r, H] found among the engram's slots [n, H+1] (by value, to 1e-5).

    >>> held_share(torch.tensor([[1.0, 2.0, 9.0]]), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    0.5
    """
    if rows.shape[0] == 0 or engram.shape[0] == 0:
        return 0.0
    states = engram[:, : rows.shape[1]]
    found = torch.isclose(states[None, :, :], rows[:, None, :], atol=1e-5).all(dim=2).any(dim=1)
    return float(found.float().mean())
