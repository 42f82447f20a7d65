"""The engram recipe: one frozen, validated dataclass stored with every engram.

Every field changes what an engram means, so a session refuses to resume with a
different recipe, and every result file records the recipe it ran with.
`recipe` names the writer and reader (companion.engine.recipes), and those carry
the recipe's own knobs; the config holds only what every recipe has.

Sessions made before recipes existed stored the seed recipe's knobs (pooling,
scaling, injection) and no `recipe`; `from_dict` reads them as the seed recipe,
and refuses a stored knob no release since then has run.

    >>> EngramConfig.from_dict({"layer": 16, "slots": 32, "pooling": "chunk-mean"}).to_dict()
    {'layer': 16, 'slots': 32, 'recipe': 'seed', 'fixed': ''}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace

from .errors import ConfigError, WrongModel  # noqa: F401  (re-exported: callers catch them here)
from .recipes import get_recipe, recipe_names

# What the stored knobs of the seed's era meant: the only values the seed recipe (and every recipe
# after it, which ignored them) ran with. A stored dict may still hold them; nothing else is accepted.
LEGACY_KNOBS = {"pooling": "chunk-mean", "scaling": "embedding-mean-norm", "injection": "prepend-embeds"}


@dataclass(frozen=True)
class EngramConfig:
    layer: int = 16  # hidden_states index: 0 is the embedding output, L is after block L
    slots: int = 32  # vectors in an engram
    recipe: str = "seed"  # a name registered in companion.engine.recipes
    fixed: str = ""  # sha256 of the recipe's fixed tensors on the session's model ("" until an engine fills it)

    def __post_init__(self) -> None:
        if self.recipe not in recipe_names():
            raise ConfigError(f"unknown recipe {self.recipe!r}; choose one of {', '.join(recipe_names())} "
                              "(`companion recipes` describes them)")
        if not isinstance(self.fixed, str):
            raise ConfigError(f"fixed must be a sha256 hex string, got {self.fixed!r}")
        if not isinstance(self.layer, int) or self.layer < 0:
            raise ConfigError(f"layer must be a non-negative integer, got {self.layer!r}")
        if not isinstance(self.slots, int) or not 1 <= self.slots <= 4096:
            raise ConfigError(f"slots must be an integer in 1..4096, got {self.slots!r}")

    def check_model(self, num_hidden_layers: int) -> None:
        """A model with n blocks has hidden states 0..n; refuse a layer beyond that."""
        if self.layer > num_hidden_layers:
            raise ConfigError(
                f"layer {self.layer} is beyond this model's depth: it has {num_hidden_layers} "
                f"blocks, so choose --layer between 1 and {num_hidden_layers}"
            )
        if get_recipe(self.recipe).reader.depth_is_layer and self.layer >= num_hidden_layers:
            raise ConfigError(f"recipe {self.recipe!r} writes the engram back at layer {self.layer}, so the layer "
                              f"must have a block after it: choose --layer below {num_hidden_layers}")

    def with_fixed(self, digest: str) -> "EngramConfig":
        return self if self.fixed == digest else replace(self, fixed=digest)

    def same_recipe(self, other: "EngramConfig") -> bool:
        """Equal, where a blank `fixed` (not yet computed) matches any hash."""
        a, b = self.to_dict(), other.to_dict()
        if not a["fixed"] or not b["fixed"]:
            a["fixed"] = b["fixed"] = ""
        return a == b

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "EngramConfig":
        """A stored config, old or new; a field or a legacy knob no release can run is refused by name."""
        data = dict(data)
        for knob, meant in LEGACY_KNOBS.items():
            value = data.pop(knob, meant)
            if value != meant:
                raise ConfigError(f"the stored recipe has {knob} {value!r}; this release runs only {meant!r}, "
                                  "so this engram cannot be resumed")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown recipe fields: {', '.join(sorted(unknown))}")
        return cls(**data)

    def describe(self) -> str:
        """One line: the recipe, its layer and slots, and what its writer and reader do (Recipe.summary)."""
        summary = get_recipe(self.recipe).summary
        return f"{self.recipe}: layer {self.layer}, {self.slots} slots" + (f", {summary}" if summary else "")

    def differences(self, other: "EngramConfig") -> list[str]:
        """Human-readable field differences, e.g. ['layer: 16 -> 8']."""
        return [
            f"{f.name}: {getattr(self, f.name)} -> {getattr(other, f.name)}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
            and not (f.name == "fixed" and not (self.fixed and other.fixed))
        ]
