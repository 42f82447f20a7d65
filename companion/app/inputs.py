"""What a user may send: a chat message, or a system prompt; refused in one line otherwise."""

from __future__ import annotations

from .errors import CompanionError

CONTROL_OK = {"\n", "\t"}

def clean_input(text: str) -> str:
    """Refuse what cannot be a chat message; returns the text stripped."""
    if "\x00" in text:
        raise CompanionError("input contains a NUL byte; nothing was sent")
    bad = sorted({f"U+{ord(c):04X}" for c in text if ord(c) < 32 and c not in CONTROL_OK and c != "\r"})
    if bad:
        raise CompanionError(f"input contains control characters ({', '.join(bad)}); nothing was sent")
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text:
        raise CompanionError("input is empty; type a message (or /help)")
    return text


def clean_system(text: str | None) -> str | None:
    """A --system text stripped ("" clears the prompt), or None when not given."""
    if text is None or not text.strip():
        return None if text is None else ""
    try:
        return clean_input(text)
    except CompanionError as exc:
        raise CompanionError(str(exc).replace("input", "the system prompt", 1)) from None
