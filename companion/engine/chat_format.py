"""Token ids of one exchange in the model's chat format, and where its parts start.

    >>> ids = chat_ids(tok, "hi")              # template + "hi" + assistant header
    >>> ids[content_start(tok)]                # the first token of the user's text
"""

from __future__ import annotations

from functools import lru_cache

MARK = "\u2063ENGRAM\u2063"  # never typed by a user; split on after rendering the template


def messages(user_text: str, system: str | None = None) -> list[dict]:
    """The chat messages of one exchange: a system message only when one is given.

    Without one the template's own default applies (SmolLM2's names itself), so
    the harnesses, which never pass one, see exactly the prompts they always did.
    """
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user_text}]


def _plain_system(system: str | None) -> str:
    return f"System: {system}\n" if system else ""


def chat_ids(tokenizer, user_text: str, reply_text: str | None = None, *, system: str | None = None) -> list[int]:
    """Token ids of one exchange in the model's chat format.

    With reply_text None this ends with the generation prompt (assistant header).
    Models without a chat template get a plain "User:/Assistant:" layout.
    """
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages(user_text, system), add_generation_prompt=True, tokenize=True)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    else:
        ids = tokenizer(f"{_plain_system(system)}User: {user_text}\nAssistant:", add_special_tokens=True)["input_ids"]
    if reply_text is not None:
        ids += tokenizer(reply_text, add_special_tokens=False)["input_ids"]
    return ids


def end_id(tokenizer) -> int:
    """The token that closes a reply; it is part of the turn the engram absorbs."""
    eos = tokenizer.eos_token_id
    return eos if eos is not None else tokenizer.pad_token_id or 0


def content_start(tokenizer, system: str | None = None) -> int:
    """Index of the user text's first token in chat_ids (the length of the template before it)."""
    return _content_start(tokenizer, system or None)


@lru_cache(maxsize=8)
def _content_start(tokenizer, system: str | None) -> int:
    a, b = chat_ids(tokenizer, "x", system=system), chat_ids(tokenizer, "y", system=system)
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def template_around(tokenizer, before: str, after: str, reply_text: str | None = None, *,
                    system: str | None = None) -> tuple[list[int], list[int]]:
    """Ids of the exchange whose user message is before + <gap> + after, split at the gap.

    The gap is where a reader puts engram slots inside the message.
    """
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages(before + MARK + after, system),
                                             add_generation_prompt=True, tokenize=False)
        left, right = text.split(MARK)
        head = tokenizer(left, add_special_tokens=False)["input_ids"]
        tail = tokenizer(right, add_special_tokens=False)["input_ids"]
    else:
        head = tokenizer(f"{_plain_system(system)}User: {before}", add_special_tokens=True)["input_ids"]
        tail = tokenizer(f"{after}\nAssistant:", add_special_tokens=False)["input_ids"]
    if reply_text is not None:
        tail += tokenizer(reply_text, add_special_tokens=False)["input_ids"]
    return head, tail


def word_starts(tokenizer, ids: list[int]) -> list[bool]:
    """Per token: does it begin a word? A token continues a word when it starts with a letter or digit
    and the token before it ends with one ("Zyplyn" as ' Z' 'y' 'ply' 'n': True False False False).
    Decided on the text of each adjacent pair, so tokenizers that mark spaces differently agree."""
    return [i == 0 or not _joins(tokenizer, ids[i - 1], ids[i]) for i in range(len(ids))]


@lru_cache(maxsize=1 << 16)
def _joins(tokenizer, a: int, b: int) -> bool:
    left = tokenizer.decode([a])
    both = tokenizer.decode([a, b])
    # A pair decoded alone keeps b's leading space (a single token at the start may lose it).
    piece = both[len(left):] if both.startswith(left) else tokenizer.decode([b])
    return bool(left) and bool(piece) and left[-1].isalnum() and piece[0].isalnum()
