"""The REPL's memory commands (/memory, /forget, /undo, /retry) as callbacks over a Companion.

Kept apart from cli.cmd_chat so the chat loop only merges them in; `current`
names the session the chat is in now (it can change with /switch).
"""

from __future__ import annotations

from typing import Callable

from .cli_args import forget_request
from .errors import CompanionError
from .memory import forget, memory_view, undo
from .views import footer_line, forget_text, memory_text


def memory_commands(comp, current: Callable[[], str]) -> tuple[dict, dict]:
    """(commands: /name -> f(arg) -> text, streams: /name -> f(arg, on_text) -> footer) for run_repl."""

    def show_memory(_arg: str) -> str:
        return memory_text(memory_view(comp.store, current()))

    def forget_words(arg: str) -> str:
        text, turn = forget_request(arg)
        return forget_text(forget(comp.store, current(), text=text, turn=turn))

    def undo_turn(_arg: str) -> str:
        index, user = undo(comp.store, current())
        short = user if len(user) <= 60 else user[:57] + "..."
        return f"undid turn {index} ({short!r}); the session goes on from the memory after turn {index - 1}"

    def retry_turn(arg: str, on_text) -> str:
        if arg:
            raise CompanionError("/retry takes nothing: it makes the last reply again")
        return "retried: " + footer_line(comp.retry(current(), on_text=on_text))

    return ({"memory": show_memory, "forget": forget_words, "undo": undo_turn}, {"retry": retry_turn})
