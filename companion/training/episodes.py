"""Training episodes: a few turns lived, then one question the engram alone must answer.

An episode is a list of turns (indices into the training turns: chit-chat,
conv-26 and planted-fact statements), the prompt asked after the last one,
and the target the model should produce. The kinds of episode:

    qa     a planted fact, k turns of other talk (sometimes a second fact),
           then its question; target: the answer
    recon  the same life, then "repeat what I told you about <topic>";
           target: the fact's statement (autoencoding through the engram)
    chat   the same life, then an unrelated line of real chat; target: the
           reply the person gave (the engram must not push stored words into
           every reply: a writer trained on qa and recon alone made the model
           open unrelated replies with the remembered name; measured, these
           episodes did not stop it: docs/HISTORY.md, "A trained map")
    absent the same life, then the question of a fact that was never told;
           target: ABSENT_REPLY (without these the engram answered every
           personal question with whatever it held; with them too, mostly)
    quiet  the same life, then a prompt the engram has nothing to do with (half
           the question of a fact never told, half an unrelated chat line);
           target: the frozen model's own greedy reply to it with no memory
           (QUIET, filled in by the trainer): with a memory it was not asked
           about, the model should say what it says without one. `avoid` names
           the fact's answer: with Trainer(avoid_weight=w) the loss also pushes
           down the probability of opening the reply with it (an unlikelihood
           term; the NLL of a 24-token reply alone left the first word, where
           the remembered name came out, nearly unweighted)
    next   a real conversation from its start (half the time after a planted
           fact), then its next user line; target: the reply the person really
           gave. This is what the chat-harm measure scores (next-utterance NLL
           with the engram vs none): the engram of the talk so far should help
           the next reply, and a held fact should not get in its way (`avoid`
           names the fact's answer, as in quiet episodes). `chat` episodes
           differ: their line comes from another conversation, so the engram
           can only get in the way there

`k` follows a curriculum (Curriculum.k_max): one turn, then 2, 4, and more.
Everything is drawn from random.Random(f"{seed}:{step}") so a resumed run
draws what the uninterrupted one would have.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

RECON_PROMPT = "What did I tell you about myself earlier? Repeat it word for word."
ABSENT_REPLY = "You haven't told me that."
KINDS = ("qa", "recon", "chat", "absent", "quiet", "next")
QUIET = ""  # the target of a quiet episode until the trainer puts the model's own reply there


@dataclass(frozen=True)
class Episode:
    turns: tuple[int, ...]  # indices into the training turns, in order; the first is laid out as a first turn
    prompt: str
    target: str
    kind: str  # one of KINDS
    k: int  # turns lived after the fact
    avoid: str = ""  # quiet episodes: the answer the engram holds, which this reply has no business saying


@dataclass(frozen=True)
class Curriculum:
    """k_max by progress: 1 turn of other talk, then 2, 4, 8 and the full range."""

    steps: int
    stages: tuple[tuple[float, int], ...] = ((0.1, 1), (0.25, 2), (0.45, 4), (0.7, 8), (1.01, 20))

    def k_max(self, step: int) -> int:
        frac = step / max(1, self.steps)
        return next(k for until, k in self.stages if frac < until)


class EpisodeSampler:
    """Draws episodes from fact turns (with their Fact) and talk turns (runs of a conversation).

    facts: [(turn index, Fact)]; talk: runs of consecutive turn indices; texts: the (user, reply)
    of every turn index, needed only for chat episodes (chat_share > 0).
    """

    def __init__(self, facts: list[tuple[int, object]], talk: list[list[int]], recon_share: float = 0.25,
                 chat_share: float = 0.0, texts: list[tuple[str, str]] | None = None,
                 absent_share: float = 0.0, quiet_share: float = 0.0, next_share: float = 0.0):
        if (chat_share or quiet_share or next_share) and texts is None:
            raise ValueError("chat, quiet and next episodes need the turns' texts")
        self.facts, self.talk, self.recon_share = facts, talk, recon_share
        self.chat_share, self.texts, self.absent_share = chat_share, texts, absent_share
        self.quiet_share, self.next_share = quiet_share, next_share

    def _talk(self, rng: random.Random, n: int, *, opening: bool = False) -> list[int]:
        run = rng.choice(self.talk)
        start = 0 if opening else rng.randrange(len(run))  # a session opens with a conversation's start
        out = [run[(start + i) % len(run)] for i in range(n)]
        if n > len(run):  # long lives cross into another conversation
            out = out[: len(run)] + self._talk(rng, n - len(run))
        return out

    def draw(self, rng: random.Random, k_max: int) -> Episode:
        if self.next_share and rng.random() < self.next_share:  # no draw at 0: older runs draw as they did
            return self.next_at(rng, k_max)
        return self.draw_at(rng, rng.randint(0, k_max))

    def next_at(self, rng: random.Random, k_max: int) -> Episode:
        """A next episode: up to k_max + 1 turns of one conversation from its start, then its next turn."""
        run = rng.choice([r for r in self.talk if len(r) > 1])
        j = rng.randint(1, min(len(run) - 1, k_max + 1))
        fact, avoid = [], ""
        if rng.random() < 0.5:
            fact_turn, f = rng.choice(self.facts)
            fact, avoid = [fact_turn], f.answer
        user, reply = self.texts[run[j]]
        return Episode(tuple(fact + run[:j]), user, reply, "next", j, avoid=avoid)

    def draw_at(self, rng: random.Random, k: int) -> Episode:
        """An episode with exactly k turns after the fact."""
        turns, fact, told = self._life(rng, k)
        if self.quiet_share and rng.random() < self.quiet_share:  # no draw at 0: older runs draw as they did
            return self._quiet(rng, turns, told, k, fact.answer)
        if self.absent_share and rng.random() < self.absent_share:  # no draw at 0, as for chat
            untold = [f for _, f in self.facts if f.template not in told]
            return Episode(turns, rng.choice(untold).question, ABSENT_REPLY, "absent", k)
        if self.chat_share and rng.random() < self.chat_share:  # no draw at 0: older runs draw as they did
            user, reply = self.texts[self._talk(rng, 1)[0]]
            return Episode(turns, user, reply, "chat", k)
        if rng.random() < self.recon_share:
            return Episode(turns, RECON_PROMPT, fact.statement, "recon", k)
        return Episode(turns, fact.question, fact.answer, "qa", k)

    def quiet_at(self, rng: random.Random, k: int) -> Episode:
        """A quiet episode with exactly k turns after the fact (validation)."""
        turns, fact, told = self._life(rng, k)
        return self._quiet(rng, turns, told, k, fact.answer)

    def _life(self, rng: random.Random, k: int) -> tuple[tuple[int, ...], object, set]:
        """The turns lived (a fact, k turns after it), the fact asked about, the templates told."""
        fact_turn, fact = rng.choice(self.facts)
        before = self._talk(rng, rng.choice([0, 0, 1, 2]), opening=True)  # the fact is not always the session's first turn
        after = self._talk(rng, k) if k else []
        told = {fact.template}
        if after and rng.random() < 0.3:  # a second fact competes for the slots
            other_turn, other = rng.choice(self.facts)
            if other.template != fact.template:
                after[rng.randrange(len(after))] = other_turn
                told.add(other.template)
        return tuple(before + [fact_turn] + after), fact, told

    def _quiet(self, rng: random.Random, turns: tuple[int, ...], told: set, k: int, held: str) -> Episode:
        if self.texts is not None and rng.random() < 0.5:
            prompt = self.texts[self._talk(rng, 1)[0]][0]
        else:
            prompt = rng.choice([f for _, f in self.facts if f.template not in told]).question
        return Episode(turns, prompt, QUIET, "quiet", k, avoid=held)

    def batch(self, seed: int, step: int, size: int, k_max: int) -> list[Episode]:
        rng = random.Random(f"{seed}:{step}")
        return [self.draw(rng, k_max) for _ in range(size)]
