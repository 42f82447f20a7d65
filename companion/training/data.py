"""The training set: turns (talk and planted facts) and the episode samplers over them.

    data = build_data(seed=0, facts=400, talk=800)
    data.turns          [(user, reply)] talk first, then one turn per fact
    data.train, data.val EpisodeSamplers (val: the HELD_OUT fact templates only)
    data.firsts         turns that may open an episode (laid out with no engram)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .corpus import chitchat_turns, locomo_turns
from .episodes import EpisodeSampler
from .facts import ACKS, make_train_fact


@dataclass
class TrainingData:
    turns: list[tuple[str, str]]
    train: EpisodeSampler
    val: EpisodeSampler
    firsts: set[int]


def build_data(*, seed: int, facts: int, talk: int, val_facts: int = 48, locomo=None,
               chitchat=None, talk_runs: list[list[tuple[str, str]]] | None = None,
               chat_share: float = 0.0, absent_share: float = 0.0, quiet_share: float = 0.0,
               next_share: float = 0.0) -> TrainingData:
    """Deterministic in its arguments. talk_runs replaces the corpora (tests use small generated talk).
    chat_share, absent_share, quiet_share, next_share: the parts of training episodes that end in an
    unrelated chat line, in the question of a fact never told, in either with the model's own reply as
    the target, or in a conversation's own next turn (episodes.py)."""
    rng = random.Random(f"data:{seed}")
    if talk_runs is None:
        runs = chitchat_turns(talk, rng, chitchat)
        conv = locomo_turns(locomo)
        runs += [conv[i:i + 40] for i in range(0, min(len(conv), max(40, talk // 4)), 40)]
    else:
        runs = talk_runs
    turns: list[tuple[str, str]] = []
    talk_idx = []
    for run in runs:
        talk_idx.append(list(range(len(turns), len(turns) + len(run))))
        turns += run

    def planted(n: int, held_out: bool) -> list[tuple[int, object]]:
        out = []
        for _ in range(n):
            fact = make_train_fact(rng, held_out=held_out)
            out.append((len(turns), fact))
            turns.append((fact.statement, rng.choice(ACKS)))
        return out

    train_facts, val_facts_ = planted(facts, False), planted(val_facts, True)
    # Any turn can open an episode's life: facts always, talk from the runs' starts and a sample.
    openers = {i for i, _ in train_facts + val_facts_}
    for run in talk_idx:
        openers.update(run[: min(3, len(run))])
    train = EpisodeSampler(train_facts, talk_idx, chat_share=chat_share, texts=turns, absent_share=absent_share,
                           quiet_share=quiet_share, next_share=next_share)
    return TrainingData(turns, train, EpisodeSampler(val_facts_, talk_idx, 0.0), openers)
