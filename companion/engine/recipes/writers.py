"""Writers: the layer-L states of engram + turn -> the next engram.

    ChunkMean  the seed's writer: N contiguous chunk means of every position,
               optionally without the attention sink(s) and centred on a mean state
    Select     N token states kept unaveraged, in order; the old slots compete
               with the turn's tokens by salience (surprise when written,
               decayed each cycle), stored as one extra column per slot

Example (massive-activation positions of 4 states, one of them huge):
    >>> import torch
    >>> sink_positions(torch.tensor([[100.], [1.], [2.], [1.5]]))
    [0]
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import torch

from .. import engram as E
from .base import Written


def sink_positions(states: torch.Tensor, ratio: float = 10.0) -> list[int]:
    """Positions whose state norm is `ratio` times the median norm (massive activations), and 0."""
    norms = states.float().norm(dim=-1)
    med = norms.median().clamp_min(1e-6)
    found = set(torch.nonzero(norms > ratio * med).flatten().tolist())
    return sorted(found | {0})


@dataclass(frozen=True)
class ChunkMean:
    name: str = "chunk-mean"
    drop_sinks: bool = False
    centred: bool = False  # subtract the recipe's fixed mean state ("mean")
    needs_surprise: bool = False
    extra_columns: int = 0

    def write(self, w: Written, slots: int, fixed: dict | None = None) -> torch.Tensor:
        states = w.states
        if self.drop_sinks:
            keep = sorted(set(range(states.shape[0])) - set(sink_positions(states)))
            states = states[keep]
        if self.centred:
            states = states.float() - fixed["mean"].to(states.device)
        return E.pool(states, slots).cpu()


@dataclass(frozen=True)
class Select:
    """Keep the N most salient token states of old engram + turn.

    A new token's salience is its surprise, -log p(token | all before it), so
    invented names and numbers score high and template words low. An old
    slot's salience is what it scored when written, times `decay` per cycle,
    so the memory turns over slowly instead of freezing. Only the turn's own
    tokens (user text onwards) and the old slots are candidates; sinks are not.
    """

    name: str = "select"
    decay: float = 0.95
    per_turn: int = 0  # at most this many old slots are replaced per turn (0: no limit)
    user_only: bool = False  # candidates: the user's text only (not the reply or template tokens)
    # Salience of a token = the largest surprise in its word, so a rare word's pieces are kept or
    # dropped together: alone, the later pieces of an invented name ("Zyplyn": ' Z' 'y' 'ply' 'n')
    # are less surprising than its first and were evicted first, leaving half a name.
    whole_words: bool = False
    # With whole_words: a word also takes the salience of the next `context` words, so the words
    # just before a rare name ("a village called Zyplyn") come in with it; the name alone left
    # the reader nothing to tie it to the question.
    context: int = 0
    # span > 0: a turn enters as one piece, `span` tokens of its candidates (the user's text with
    # user_only) around their most surprising one, all scored by that peak, so the engram holds a
    # few whole statements instead of scattered words: given only the fact's layer-L states the
    # reader answered 3 of 6 after ten turns of talk; given the two words a select writer kept, 1 of 6.
    span: int = 0
    needs_surprise: bool = True
    extra_columns: int = 1
    fills_gradually: bool = True  # a short first turn leaves slots empty until later turns fill them

    @property
    def needs_words(self) -> bool:
        return self.whole_words

    def entering(self, states: torch.Tensor, fixed: dict | None = None) -> torch.Tensor:
        """A chosen state as it enters the engram (companion.engine.sources): unchanged."""
        return states.float()

    def scored(self, w: Written, competitors: list[int]) -> tuple[list[float], list[int] | None]:
        """Per position, what a new token competes with (its surprise, with whole_words its word's
        largest, with span the largest among the competitors) and, with whole_words or span, the id of
        the group it enters and leaves with."""
        sur = [float(x) for x in w.surprise]
        if self.span:
            peak = max((sur[i] for i in competitors), default=0.0)
            return [peak] * len(sur), [0] * len(sur)
        if not self.whole_words:
            return sur, None
        sal = word_max(sur, w.words)
        if self.context:
            return lead_in(sal, w.words, self.context)
        return sal, list(itertools.accumulate(int(start) for start in w.words))

    def competitors(self, w: Written) -> list[int]:
        """Positions of the turn's own tokens that may enter the engram (no sinks, slots or template)."""
        p, states = w.placement, w.states
        sinks = set(sink_positions(states))
        end = p.user_end if (self.user_only and p.user_end is not None) else states.shape[0]
        found = [i for i in range(p.content, end) if i not in sinks and i not in set(p.slots)]
        if not self.span or len(found) <= self.span:
            return found
        top = max(range(len(found)), key=lambda j: float(w.surprise[found[j]]))
        start = max(0, min(top - (self.span - 1 - self.span // 4), len(found) - self.span))
        return found[start:start + self.span]  # the peak and a quarter of the span after it (a name's pieces)

    def cap(self, positions: list[int], surprise, old_n: int, slots: int, words: list[int] | None = None) -> list[int]:
        """The most surprising of `positions` a turn may bring in, in text order: empty slots fill
        freely, a full engram yields at most per_turn a turn (so one turn cannot wipe the memory).
        words: a word id per position (whole_words): a word comes in whole or not at all."""
        free = max(0, slots - old_n)
        room = free + self.per_turn
        if not self.per_turn or len(positions) <= room:
            return list(positions)
        if words is not None:  # per_turn counts words: a long name still gets in (keep() makes room)
            return capped_words([float(surprise[i]) for i in positions], [words[i] for i in positions],
                                free, self.per_turn, slots, positions)
        return sorted(sorted(positions, key=lambda i: -float(surprise[i]))[:room])

    def keep(self, old_salience: list[float], new_salience: list[float], slots: int,
             groups: list[int] | None = None) -> list[int]:
        """Indices into old slots + new candidates of the N kept, in order (old first, then text order).
        groups: a word id per index (whole_words): words are kept whole or dropped whole."""
        sal = [s * self.decay for s in old_salience] + list(new_salience)
        if groups is not None:
            return fill_whole(sal, groups, slots)
        return sorted(sorted(range(len(sal)), key=lambda i: -sal[i])[:slots])

    def write(self, w: Written, slots: int, fixed: dict | None = None) -> torch.Tensor:
        if self.span > slots:  # a statement longer than the engram could never be kept
            return dataclasses.replace(self, span=slots).write(w, slots, fixed)
        states = w.states.float()
        old = w.engram.float() if w.engram is not None else states.new_zeros((0, states.shape[1] + 1))
        found = self.competitors(w)
        sal_now, words = self.scored(w, found)
        cands = self.cap(found, sal_now, old.shape[0], slots, words)
        old_sal = old[:, -1].tolist()
        new_sal = [sal_now[i] for i in cands]
        vecs = [old[j, :-1] for j in range(old.shape[0])] + [states[i] for i in cands]
        if not vecs:
            return states.new_zeros((0, states.shape[1] + 1)).cpu()
        sal = [s * self.decay for s in old_sal] + new_sal
        groups = None
        if words is not None:  # old slots: a run of equal salience is one word (word_max wrote it so)
            groups = list(itertools.accumulate(int(a != b) for a, b in zip(old_sal, [None] + old_sal[:-1])))
            base = (groups[-1] + 1) if groups else 0
            groups += [base + words[i] for i in cands]
        top = self.keep(old_sal, new_sal, slots, groups)
        rows = [torch.cat([vecs[i], vecs[i].new_tensor([sal[i]])]) for i in top]
        return torch.stack(rows).cpu()


def fill_whole(values: list[float], groups: list[int], budget: int) -> list[int]:
    """Indices of at most `budget` items, taken a whole group at a time, best group (by its largest
    value) first; a group that no longer fits is skipped for smaller ones. Returned in index order.

    >>> fill_whole([9.0, 9.0, 9.0, 5.0, 4.0], [0, 0, 0, 1, 2], 3)
    [0, 1, 2]
    >>> fill_whole([9.0, 9.0, 9.0, 5.0, 4.0], [0, 0, 0, 1, 2], 2)
    [3, 4]
    """
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    order = sorted(members.values(), key=lambda m: -max(values[i] for i in m))  # stable: earlier first
    kept: list[int] = []
    for m in order:
        if len(kept) + len(m) <= budget:
            kept += m
    return sorted(kept)


def capped_words(values: list[float], groups: list[int], free: int, per_turn: int, slots: int,
                 positions: list[int]) -> list[int]:
    """The positions of the words a turn brings in: the most salient words that fit the free slots,
    then at most per_turn more words (of at most `slots` tokens in all); in text order.

    >>> capped_words([9.0, 9.0, 9.0, 5.0, 4.0], [0, 0, 0, 1, 2], 0, 1, 32, [10, 11, 12, 13, 14])
    [10, 11, 12]
    """
    members: dict[int, list[int]] = {}
    for j, g in enumerate(groups):
        members.setdefault(g, []).append(j)
    order = sorted(members.values(), key=lambda m: -max(values[j] for j in m))
    taken: list[int] = []
    extra = 0
    for m in order:
        if len(taken) + len(m) > slots:
            continue
        if len(taken) + len(m) <= free:
            taken += m
        elif extra < per_turn:
            taken += m
            extra += 1
    return sorted(positions[j] for j in taken)


def lead_in(values: list[float], starts: list[bool], n: int, floor: float = 1.0) -> tuple[list[float], list[int]]:
    """Join each word to the most salient of itself and the next n words (values already word_max'd):
    the words leading up to a rare one become one group with it. Words below `floor` (the chat
    template's own tokens, which the model predicts almost surely) join nothing. Returns (salience,
    group) per position.

    >>> lead_in([1.0, 2.0, 9.0, 9.0, 3.0], [True, True, True, False, True], 1)
    ([9.0, 9.0, 9.0, 9.0, 3.0], [2, 2, 2, 2, 3])
    """
    begins = [i for i, s in enumerate(starts) if s or i == 0] + [len(values)]
    words = [(begins[j], begins[j + 1]) for j in range(len(begins) - 1)]
    target = list(range(len(words)))
    for j in range(len(words) - 1, -1, -1):  # from the end, so a target's own target is known
        best = j if values[words[j][0]] < floor else \
            max(range(j, min(len(words), j + 1 + n)), key=lambda m: (values[words[m][0]], -m))
        target[j] = j if best == j else target[best]
    sal, group = list(values), [0] * len(values)
    for j, (a, b) in enumerate(words):
        t = target[j]
        sal[a:b] = [values[words[t][0]]] * (b - a)
        group[a:b] = [t] * (b - a)
    return sal, group


def word_max(values: list[float], starts: list[bool]) -> list[float]:
    """Each position's value replaced by the largest in its word (a word starts where starts is True).

    >>> word_max([1.0, 5.0, 2.0, 3.0], [True, False, True, False])
    [5.0, 5.0, 3.0, 3.0]
    """
    out, begin = list(values), 0
    for i in range(1, len(values) + 1):
        if i == len(values) or starts[i]:
            top = max(values[begin:i])
            out[begin:i] = [top] * (i - begin)
            begin = i
    return out


def state_part(engram: torch.Tensor, extra_columns: int) -> torch.Tensor:
    """The [N, H] vectors of a stored engram (without salience columns)."""
    return engram[:, : engram.shape[1] - extra_columns] if extra_columns else engram
