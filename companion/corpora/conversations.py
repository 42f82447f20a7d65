"""Distractor turns: ordinary chat on other topics, lived between a fact and its question.

They come from the LoCoMo dev conversations (two speakers chatting over many
sessions): each pair of consecutive lines by different speakers becomes one
(user, reply) turn. Without the data a small generated set of small talk is used.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

MAX_CHARS = 300  # a turn's text is cut here so text modes stay within the context budget

_TOPICS = ["gardening", "a new recipe", "the weekend", "a film I watched", "running", "the weather",
           "a book club", "painting", "a road trip", "learning guitar", "a football match", "baking bread",
           "a museum visit", "yoga", "camping", "a podcast"]
_USER = ["I spent some time on {t} yesterday and really enjoyed it.", "Have you ever tried {t}? I'm curious.",
         "Honestly {t} has been on my mind all week.", "My neighbour keeps talking about {t}.",
         "I want to get better at {t} this year.", "What do you think makes {t} fun?"]
_REPLY = ["That sounds lovely, tell me more about it.", "Nice! It's great to have something like that.",
          "I can see why, it's a good way to relax.", "That's a fun thing to look forward to.",
          "Interesting, lots of people find that rewarding."]


def default_data_path() -> Path:
    """COMPANION_LOCOMO if set, else ../shared/data/locomo-dev beside the repository root."""
    env = os.environ.get("COMPANION_LOCOMO")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "locomo-dev"


def clip(text: str) -> str:
    """One line of whitespace-normalised text, cut at MAX_CHARS on a word boundary."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 3].rsplit(" ", 1)[0] + "..."


def conversation_turns(file: Path) -> list[tuple[str, str]]:
    """(user, reply) turns of one LoCoMo conversation file: consecutive lines by different speakers."""
    data = json.loads(Path(file).read_text())
    turns: list[tuple[str, str]] = []
    n = 1
    while f"session_{n}" in data or f"session_{n}_date_time" in data:
        lines = [x for x in data.get(f"session_{n}", []) if x.get("text")]
        i = 0
        while i + 1 < len(lines):
            a, b = lines[i], lines[i + 1]
            if a.get("speaker") != b.get("speaker"):
                turns.append((clip(a["text"]), clip(b["text"])))
                i += 2
            else:
                i += 1
        n += 1
    return turns


def locomo_conversations(path: Path) -> list[list[tuple[str, str]]]:
    """One list of (user, reply) turns per LoCoMo conversation file, in dialogue order."""
    convs = [conversation_turns(file) for file in sorted(Path(path).glob("*.json"))]
    return [c for c in convs if c]


def generated_conversations(count: int = 3, length: int = 120, seed: int = 0) -> list[list[tuple[str, str]]]:
    """Built-in small talk, for tests and for machines without the LoCoMo data."""
    rng = random.Random(f"smalltalk:{seed}")
    return [[(rng.choice(_USER).format(t=rng.choice(_TOPICS)), rng.choice(_REPLY)) for _ in range(length)]
            for _ in range(count)]


class DistractorPool:
    """Conversations to draw runs of consecutive distractor turns from."""

    def __init__(self, conversations: list[list[tuple[str, str]]], source: str):
        if not conversations:
            raise ValueError("no distractor conversations")
        self.conversations, self.source = conversations, source

    @classmethod
    def load(cls, path: str | Path | None = None, *, allow_fallback: bool = True) -> "DistractorPool":
        """LoCoMo from `path` (or the default place); the generated set if absent and allowed."""
        if path == "generated":
            return cls(generated_conversations(), "generated")
        p = Path(path) if path else default_data_path()
        convs = locomo_conversations(p) if p.is_dir() else []
        if convs:
            return cls(convs, f"locomo:{p.name}")
        if path or not allow_fallback:
            raise FileNotFoundError(f"no LoCoMo conversations (*.json) in {p}")
        return cls(generated_conversations(), "generated")

    def draw(self, rng: random.Random, n: int) -> list[tuple[str, str]]:
        """n consecutive turns from a random conversation and offset, wrapping around."""
        conv = rng.choice(self.conversations)
        start = rng.randrange(len(conv))
        return [conv[(start + i) % len(conv)] for i in range(n)]
