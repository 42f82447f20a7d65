"""The engram recipe: one frozen, validated dataclass stored with every engram.

Every field changes what an engram means, so a session refuses to resume with a
different recipe, and every result file records the recipe it ran with.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

POOLINGS = ("chunk-mean",)
SCALINGS = ("embedding-mean-norm", "none")
INJECTIONS = ("prepend-embeds",)


class ConfigError(ValueError):
    """A recipe that cannot run, or cannot run on this model."""


@dataclass(frozen=True)
class EngramConfig:
    layer: int = 16  # hidden_states index: 0 is the embedding output, L is after block L
    slots: int = 32  # vectors in an engram
    pooling: str = "chunk-mean"
    scaling: str = "embedding-mean-norm"
    injection: str = "prepend-embeds"

    def __post_init__(self) -> None:
        if not isinstance(self.layer, int) or self.layer < 0:
            raise ConfigError(f"layer must be a non-negative integer, got {self.layer!r}")
        if not isinstance(self.slots, int) or not 1 <= self.slots <= 4096:
            raise ConfigError(f"slots must be an integer in 1..4096, got {self.slots!r}")
        for name, allowed in (("pooling", POOLINGS), ("scaling", SCALINGS), ("injection", INJECTIONS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")

    def check_model(self, num_hidden_layers: int) -> None:
        """A model with n blocks has hidden states 0..n; refuse a layer beyond that."""
        if self.layer > num_hidden_layers:
            raise ConfigError(
                f"layer {self.layer} is beyond this model's depth: it has {num_hidden_layers} "
                f"blocks, so choose --layer between 1 and {num_hidden_layers}"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "EngramConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown recipe fields: {', '.join(sorted(unknown))}")
        return cls(**data)

    def describe(self) -> str:
        return f"layer {self.layer}, {self.slots} slots, {self.pooling}, {self.scaling}, {self.injection}"

    def differences(self, other: "EngramConfig") -> list[str]:
        """Human-readable field differences, e.g. ['layer: 16 -> 8']."""
        return [
            f"{f.name}: {getattr(self, f.name)} -> {getattr(other, f.name)}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]
