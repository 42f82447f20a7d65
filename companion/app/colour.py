"""Modest colour for a terminal: error lines red, the REPL's footer dim; none otherwise.

Never when NO_COLOR is set to a non-empty value (https://no-color.org), nor when the
stream is not a terminal (a pipe, a file, a test's StringIO) or TERM is "dumb".
prompt-toolkit's prompt reads NO_COLOR itself (ColorDepth.default).
"""

from __future__ import annotations

import os

_CODES = {"error": "31", "dim": "2"}  # SGR: red, faint


def wants_colour(stream) -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def paint(text: str, style: str, stream) -> str:
    """text in style ("error", "dim") when stream shows colour, else unchanged.

    >>> import io
    >>> paint("error:", "error", io.StringIO())
    'error:'
    """
    return f"\033[{_CODES[style]}m{text}\033[0m" if text and wants_colour(stream) else text
