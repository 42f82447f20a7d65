"""What a recipe is: a writer, a reader, and a name in the registry.

A reader lays out one prompt with the engram in it (a Placement); a writer
turns the layer-L states of that prompt (a Written) into the next engram.
The turn cycle (companion.engine.cycle.Engine) only calls these two, so a new recipe
is a new writer or reader plus one `register` call, never an edit to the cycle.

    reader.place(tok, vectors [N, H] | None, user, reply, system=None) -> Placement
    writer.write(Written) -> engram [N', H(+1)] float32 CPU
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from ..errors import WrongModel


@dataclass
class Placement:
    """One prompt with the engram placed in it.

    ids: token ids, with one placeholder id per engram slot (overwritten)
    slots: positions of the N slots in ids, in engram order
    vectors: [N, H] what the slots hold (None: no engram)
    depth: 0 puts the vectors in place of the input embeddings; L > 0 writes
        them into the residual stream entering block L+1 (hidden_states[L])
    content: first position of the turn's own text (user input onwards), so
        writers can tell the turn from the template, the frame and the slots
    user_end: the position after the user's text (before the assistant header);
        None when unknown (then: the end of ids)
    """

    ids: list[int]
    slots: list[int] = field(default_factory=list)
    vectors: torch.Tensor | None = None
    depth: int = 0
    content: int = 0
    user_end: int | None = None

    @property
    def prompt_len(self) -> int:
        return len(self.ids)


@dataclass
class Written:
    """What a writer sees after a turn.

    states: [T, H] float32 layer-L states of the whole turn as the model saw
        them (at slot positions: the engram itself when the reader wrote it at L)
    placement: the turn's layout (slot and content positions)
    surprise: [T] -log p(token | everything before it), 0 at position 0;
        filled only for writers with needs_surprise
    engram: the previous stored engram (None on a session's first turn)
    words: [T] True where a token begins a word (chat_format.word_starts);
        filled only for writers with needs_words
    """

    states: torch.Tensor
    placement: Placement
    surprise: torch.Tensor | None = None
    engram: torch.Tensor | None = None
    words: list[bool] | None = None


class Reader(Protocol):
    name: str
    depth_is_layer: bool  # True: the engram is written at the recipe's layer, not at the input

    def place(self, tokenizer, vectors: torch.Tensor | None, user: str, reply: str | None, *,
              layer: int, system: str | None = None) -> Placement: ...

    def vectors(self, engram: torch.Tensor, embed_norm: float) -> torch.Tensor: ...


class Writer(Protocol):
    name: str
    needs_surprise: bool
    extra_columns: int  # stored per slot beside the H state dims (e.g. a salience score)

    def write(self, w: Written, slots: int) -> torch.Tensor: ...


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    writer: Writer
    reader: Reader
    # Fixed tensors the recipe derives from the model (e.g. a mean state): name -> builder(lm) -> tensor.
    fixed: dict[str, Callable] = field(default_factory=dict)
    # Supported recipes are the ones `companion recipes` offers; the rest are experiments kept so old
    # sessions resume and the figures in docs/HISTORY.md can be reproduced (`companion recipes --all`).
    supported: bool = False
    summary: str = ""  # its own knobs, named as the sessions of its era stored them, for `show` and `/stats`

    def stored_width(self, hidden: int) -> int:
        return hidden + self.writer.extra_columns

    def rows_ok(self, rows: int, slots: int) -> bool:
        """A stored engram's row count: exactly `slots`, or 0..slots for a writer that fills up gradually
        (0: every slot forgotten; the next turn fills it again)."""
        return 0 <= rows <= slots if getattr(self.writer, "fills_gradually", False) else rows == slots


# New sessions get this recipe (EngramConfig's own default stays "seed": a stored recipe without a
# name is a session from before recipes existed). Chosen by companion.eval.harness.verdict's rule: first
# select-sticky over seed (10/20 against 0/20 at k=1, docs/HISTORY.md "Recipes"); then select-quiet
# (docs/HISTORY.md, "A quiet map"); then select-chat, against select-sticky (the best training-free
# recipe, as issue 10 asks) with both guards: `scripts/research/choose_default.py --degradation runs/held-chat
# --next-turn runs/next-turn-chat --base select-sticky` on 60 held-out facts (recall at k=1 40/60
# [54-77%] against 19/60 [21-44%]; its foreign engram says its own answer 12/60, the foreign
# transcript 8/60) and LoCoMo's report split (next-utterance NLL -0.170 [-0.216, -0.124] vs no
# memory, where select-quiet's +0.047 [+0.012, +0.083] fails the chat guard). docs/HISTORY.md,
# "A map that helps chat". Then select-keep, against select-chat, by the same rule read at k=20
# (issue 23 asks how long a fact is held; at k=1 the two are not separated, 5/6 and 4/6):
# `scripts/research/choose_default.py --degradation runs/long-w0 --next-turn runs/next-turn-keep
# --base select-chat --k 20` (recall 5/6 [44-97%] against 0/6 [0-39%]; both guards pass: its
# foreign engram intrudes 2/6 against the foreign transcript's 0/6, not separated; next-utterance
# NLL -0.070 [-0.104, -0.036] vs no memory). docs/RESULTS.md, "Learned retention".
DEFAULT = "select-keep"
# New sessions on a model DEFAULT's fixed tensors were not made for (a trained recipe's weights fit
# the embedded model only), and sessions given --layer/--slots without --recipe, get this one.
PORTABLE = "select-sticky"
_REGISTRY: dict[str, Recipe] = {}


def default_for(lm) -> str:
    """The recipe a new session on this model gets: DEFAULT where its fixed tensors can be built for
    it, else PORTABLE. Only "made for another model" falls back; any other failure (a changed weights
    file) is raised, so it is reported rather than hidden."""
    from types import SimpleNamespace

    try:
        for build in get_recipe(DEFAULT).fixed.values():
            build(SimpleNamespace(lm=lm))
    except WrongModel:
        return PORTABLE
    return DEFAULT


def register(recipe: Recipe) -> Recipe:
    if recipe.name in _REGISTRY:
        raise ValueError(f"recipe {recipe.name!r} is already registered")
    _REGISTRY[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown recipe {name!r}; `companion recipes` lists them: "
                       f"{', '.join(recipe_names())}") from None


def recipe_names() -> list[str]:
    return list(_REGISTRY)


def all_recipes() -> list[Recipe]:
    return [get_recipe(n) for n in recipe_names()]
