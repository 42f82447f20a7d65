"""Tab completion in the chat: slash commands, and the argument of those that take a name.

complete() is the rule, free of prompt-toolkit; slash_completer() wraps it for the prompt.
The REPL hands both the command names it was given and callbacks for the arguments
(e.g. "switch" -> the session names), so neither knows the store.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

Arguments = Mapping[str, Callable[[], Iterable[str]]]


def complete(line: str, commands: Iterable[str], arguments: Arguments) -> tuple[int, list[str]]:
    """(how many characters before the cursor the candidates replace, the candidates).

    >>> complete("/st", ["stats", "show", "switch", "help"], {})
    (2, ['stats'])
    >>> complete("/s", ["stats", "show", "switch"], {})
    (1, ['show', 'stats', 'switch'])
    >>> complete("/", ["quit", "help"], {})
    (0, ['help', 'quit'])
    >>> names = {"switch": lambda: ["trip", "default", "trip-b"]}
    >>> complete("/switch tr", ["switch"], names)
    (2, ['trip', 'trip-b'])
    >>> complete("/switch ", ["switch"], names)
    (0, ['default', 'trip', 'trip-b'])
    >>> complete("/stats x", ["stats"], names), complete("hello /st", ["stats"], names)
    ((0, []), (0, []))
    """
    line = line.lstrip()
    if not line.startswith("/"):
        return 0, []
    name, space, arg = line[1:].partition(" ")
    if not space:
        return len(name), sorted({c for c in commands if c.startswith(name)})
    source = arguments.get(name)
    arg = arg.lstrip()
    if source is None or " " in arg:
        return 0, []
    try:
        choices = list(source())
    except Exception:  # noqa: BLE001 -- a failing lookup (say, the database) must not break the prompt
        return 0, []
    return len(arg), sorted({c for c in choices if c.startswith(arg)})


def slash_completer(commands: Iterable[str], arguments: Arguments):
    """complete() as a prompt-toolkit Completer (imported here: only a terminal needs it)."""
    from prompt_toolkit.completion import Completer, Completion

    commands = tuple(commands)

    class SlashCompleter(Completer):
        def get_completions(self, document, complete_event):
            width, words = complete(document.text_before_cursor, commands, arguments)
            for word in words:
                yield Completion(word, start_position=-width)

    return SlashCompleter()
