"""Where each slot of an engram came from: the turn, the position in it, the token.

A token-keeping writer (select-*) fills a slot with one candidate state of the
turn, as it enters the engram (`writer.entering`: unchanged, or nudged by a
trained map), and copies a kept slot's state part unchanged from turn to turn.
So a new engram's rows can be traced without the writer's help: a row equal to
an old slot inherits that slot's source; a row equal (to float tolerance: the
map runs again here, in another batch shape) to an entering candidate is that
candidate's token. An averaging writer has no `entering`; its slots have no
single source (None for the whole engram).

    >>> import torch
    >>> old = torch.tensor([[1., 0., 9.], [0., 1., 9.]])          # two slots + a score column
    >>> new = torch.tensor([[0., 1., 7.], [5., 5., 3.]])          # slot 0 kept, slot 1 new
    >>> match_rows(new, old, torch.tensor([[2., 2.], [5., 5.]]), cols=1)
    [('old', 1), ('new', 1)]
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SlotSource:
    """One slot's origin: turn (1-based, the session's cycle it entered in), position in that turn's
    tokens, the token id, and the token as text (kept so showing the memory needs no tokenizer)."""

    turn: int
    position: int
    token: int
    text: str

    def to_list(self) -> list:
        return [self.turn, self.position, self.token, self.text]


def match_rows(new: torch.Tensor, old: torch.Tensor | None, entering: torch.Tensor, *, cols: int,
               rtol: float = 1e-4, atol: float = 1e-4) -> list[tuple[str, int] | None]:
    """Per row of `new` [N, H+cols]: ('old', j) when its state part equals old row j's, ('new', i) when it
    is close to entering candidate i [M, H], else None."""
    hidden = new.shape[1] - cols
    state = new[:, :hidden].float()
    old_state = old[:, :hidden].float() if old is not None and old.shape[0] else None
    out: list[tuple[str, int] | None] = []
    for row in state:
        if old_state is not None:
            same = (old_state == row).all(dim=1).nonzero().flatten()
            if same.numel():
                out.append(("old", int(same[0])))
                continue
        if entering.shape[0]:
            gap = (entering.float() - row).abs() - (atol + rtol * row.abs())
            ok = (gap <= 0).all(dim=1).nonzero().flatten()
            if ok.numel():
                out.append(("new", int(ok[0])))
                continue
        out.append(None)
    return out


def trace_sources(new: torch.Tensor, old: torch.Tensor | None, old_sources: list[SlotSource | None] | None,
                  entering: torch.Tensor, positions: list[int], ids: list[int], turn: int, tokenizer,
                  *, cols: int) -> list[SlotSource | None]:
    """The sources of `new`'s slots. entering [M, H]: the turn's candidate states as they would enter,
    at `positions` of the turn's token `ids`. An old slot whose source was unknown stays unknown."""
    out = []
    for m in match_rows(new, old, entering, cols=cols):
        if m is None:
            out.append(None)
        elif m[0] == "old":
            out.append(old_sources[m[1]] if old_sources is not None and m[1] < len(old_sources) else None)
        else:
            pos = positions[m[1]]
            out.append(SlotSource(turn, pos, ids[pos], tokenizer.decode([ids[pos]])))
    return out


def sources_json(sources: list[SlotSource | None] | None) -> str | None:
    """As stored (engrams.sources): a JSON list, one [turn, position, token, text] or null per slot.

    >>> sources_json([SlotSource(3, 17, 412, " cact"), None])
    '[[3, 17, 412, " cact"], null]'
    """
    if sources is None:
        return None
    return json.dumps([None if s is None else s.to_list() for s in sources])


def parse_sources(text: str | None, rows: int) -> list[SlotSource | None] | None:
    """engrams.sources back to SlotSources; None when absent, unreadable or not one per slot (shown as
    "source unknown": the column is display metadata, outside the engram's checksum).

    >>> parse_sources('[[3, 17, 412, " cact"], null]', 2)
    [SlotSource(turn=3, position=17, token=412, text=' cact'), None]
    >>> parse_sources('[[3, 17]]', 1) is None
    True
    """
    if not text:
        return None
    try:
        raw = json.loads(text)
        if not isinstance(raw, list) or len(raw) != rows:
            return None
        out = []
        for item in raw:
            if item is None:
                out.append(None)
                continue
            turn, pos, token, piece = item
            if not (isinstance(turn, int) and isinstance(pos, int) and isinstance(token, int)
                    and isinstance(piece, str)):
                return None
            out.append(SlotSource(turn, pos, token, piece))
        return out
    except (ValueError, TypeError):
        return None


@dataclass(frozen=True)
class Word:
    """Slots that hold one word: adjacent slots of one turn whose tokens were adjacent and join
    (a name's pieces); `text` is the word as said, `slots` its slot indices, `turn` None when unknown."""

    text: str
    turn: int | None
    slots: tuple[int, ...]


def _joins(a: SlotSource, b: SlotSource) -> bool:
    return (a.turn == b.turn and b.position == a.position + 1 and bool(a.text) and bool(b.text)
            and a.text[-1].isalnum() and b.text[0].isalnum())


def words(sources: list[SlotSource | None]) -> list[Word]:
    """The engram's slots as words, in slot order (a slot of unknown source is a word of its own).

    >>> src = [SlotSource(1, 4, 0, " V"), SlotSource(1, 5, 0, "orn"), SlotSource(1, 6, 0, "elk"),
    ...        SlotSource(1, 8, 0, " cactus"), None]
    >>> [(w.text, w.turn, w.slots) for w in words(src)]
    [('Vornelk', 1, (0, 1, 2)), ('cactus', 1, (3,)), ('?', None, (4,))]
    """
    out: list[Word] = []
    run: list[int] = []

    def close() -> None:
        if run:
            first = sources[run[0]]
            out.append(Word("".join(sources[i].text for i in run).strip(), first.turn, tuple(run)))
            run.clear()

    for i, s in enumerate(sources):
        if s is None:
            close()
            out.append(Word("?", None, (i,)))
            continue
        if run and not _joins(sources[run[-1]], s):
            close()
        run.append(i)
    close()
    return out


def normal(text: str) -> str:
    """Lower case, letters and digits only: how `forget` compares words.

    >>> normal(" Vornelk's,")
    'vornelks'
    """
    return "".join(ch for ch in text.lower() if ch.isalnum())


def forget_slots(sources: list[SlotSource | None], *, text: str | None = None,
                 turn: int | None = None) -> list[Word]:
    """The words to take out: those equal (by `normal`) to a word of `text`, or those that entered in `turn`.

    >>> src = [SlotSource(1, 4, 0, " V"), SlotSource(1, 5, 0, "orn"), SlotSource(1, 6, 0, "elk"),
    ...        SlotSource(2, 3, 0, " swim")]
    >>> [w.text for w in forget_slots(src, text="Vornelk!")], [w.text for w in forget_slots(src, turn=2)]
    (['Vornelk'], ['swim'])
    """
    if (text is None) == (turn is None):
        raise ValueError("forget by text or by turn, not both")
    if turn is not None:
        return [w for w in words(sources) if w.turn == turn]
    wanted = {normal(t) for t in text.split()} - {""}
    return [w for w in words(sources) if w.turn is not None and normal(w.text) in wanted]
