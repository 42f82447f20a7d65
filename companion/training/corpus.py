"""Conversation turns for training: real chit-chat and LoCoMo's conv-26 (never the report split).

    chitchat_turns(n, rng)  (user, reply) pairs from the `chitchat-dataset`
                            package (MIT, 7,168 human chats; the `train` extra)
    locomo_turns(folder)    conv-26's turns (the only LoCoMo conversation
                            training may use)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from companion.corpora.conversations import clip, conversation_turns, default_data_path

TRAIN_CONVERSATION = "conv-26"


class CorpusError(RuntimeError):
    """Training data that is not installed or not found."""


def chitchat_path() -> Path:
    try:
        import chitchat_dataset
    except ImportError:
        raise CorpusError("the chitchat-dataset package is missing: pip install -e '.[train]'") from None
    return Path(chitchat_dataset.__file__).parent / "dataset.json"


def chat_pairs(conversation: dict) -> list[tuple[str, str]]:
    """A chitchat conversation's (user, reply) turns: each message group answered by the next one.

    >>> c = {"messages": [[{"text": "Hi"}, {"text": "how are you?"}], [{"text": "good"}], [{"text": "ok"}]]}
    >>> chat_pairs(c)
    [('Hi how are you?', 'good')]
    """
    groups = [clip(" ".join(m["text"] for m in g if m.get("text"))) for g in conversation["messages"]]
    return [(groups[i], groups[i + 1]) for i in range(0, len(groups) - 1, 2) if groups[i] and groups[i + 1]]


def chitchat_turns(n: int, rng: random.Random, path: Path | None = None) -> list[list[tuple[str, str]]]:
    """Up to n turns from randomly chosen chitchat conversations, kept as runs (conversation order)."""
    data = json.loads((path or chitchat_path()).read_text())
    keys = sorted(data)
    rng.shuffle(keys)
    runs, total = [], 0
    for key in keys:
        pairs = chat_pairs(data[key])[:8]
        if pairs:
            runs.append(pairs)
            total += len(pairs)
        if total >= n:
            break
    return runs


def locomo_turns(folder: Path | None = None) -> list[tuple[str, str]]:
    """conv-26's turns, as the harness draws distractors (LoCoMo's report split is never read)."""
    file = Path(folder or default_data_path()) / f"{TRAIN_CONVERSATION}.json"
    if not file.is_file():
        raise CorpusError(f"{file} not found (COMPANION_LOCOMO points at the LoCoMo dev folder)")
    return conversation_turns(file)
