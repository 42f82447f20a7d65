"""The chat REPL. It knows nothing about models or storage: it gets callbacks.

    respond(text, on_text) runs one turn, streaming the reply through on_text,
    and returns a short footer line (or None). KeyboardInterrupt inside it
    cancels that turn only; EOF (Ctrl-D) or /quit ends the loop.
    commands map /name to a function of the argument returning text; streams
    map /name to a turn like respond's (/more), fed the argument instead of text.
    arguments map /name to a callable listing what its argument may be (Tab completes it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Iterable, TextIO

from .colour import paint
from .completer import slash_completer

Respond = Callable[[str, Callable[[str], None]], "str | None"]
Command = Callable[[str], str]

HELP = """Type a message and press Enter (Esc-Enter or Alt-Enter starts a new line; Tab completes /commands).
Ctrl-C cancels a reply (nothing is stored); Ctrl-D quits.
/help        this help
/sessions    list saved sessions
/history [N] the last N exchanges (default 5)
/more        continue the last reply (after "[cut at N tokens]"), as a turn of its own
/stats       cycles, prompt tokens this turn vs the full transcript, engram norm, recalled turns
/memory      what the engram holds now: the words its slots came from, their turn and score
/forget TEXT take the slots that came from TEXT out of the memory (/forget --turn N: from turn N)
/undo        drop the last turn; the session goes on from the memory before it
/retry       make the last reply again from the same memory, replacing it
/show        this session's transcript
/switch NAME go on in session NAME (resumed, or new); /switch alone names the current one
/quit        leave (the session is already saved after every turn)"""


class LineError(ValueError):
    """A line that cannot be read as text; the REPL reports it and reads the next one."""


def private_file(path: Path) -> Path:
    """Create path if missing and make it owner-only: the input history holds what the user typed."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    os.chmod(path, 0o600)
    return path


BUILTINS = ("help", "quit", "exit")  # what run_repl answers itself, besides the commands it is given


def newline_keys():
    """Esc-Enter inserts a line break; Alt-Enter arrives from the terminal as the same two keys.

    Without this, prompt-toolkit's Esc-Enter sends the message, like Enter.
    """
    from prompt_toolkit.key_binding import KeyBindings

    keys = KeyBindings()

    @keys.add("escape", "enter")
    def _newline(event) -> None:
        event.current_buffer.insert_text("\n")

    return keys


def prompt_session(history=None, **io):
    """The terminal prompt: Enter sends, Esc-Enter / Alt-Enter add a line, a paste stays one message.

    Pasted multi-line text arrives whole (bracketed paste) and is inserted, not sent line by
    line. io: prompt-toolkit's input= and output= (tests drive it through a pipe).
    """
    from prompt_toolkit import PromptSession

    return PromptSession(history=history, key_bindings=newline_keys(), complete_while_typing=False,
                         prompt_continuation=". ", **io)


class PromptReader:
    """prompt_reader's terminal reader; run_repl tells it what Tab completes (complete_with)."""

    def __init__(self, session):
        self.session = session

    def __call__(self) -> str:
        return self.session.prompt("> ")

    def complete_with(self, commands: Iterable[str], arguments: dict) -> None:
        self.session.completer = slash_completer(commands, arguments)


def prompt_reader(history_file: Path | None = None) -> Callable[[], str]:
    """A line reader: prompt-toolkit on a terminal, plain stdin lines (one message each) otherwise."""
    if sys.stdin.isatty():
        from prompt_toolkit.history import FileHistory, InMemoryHistory

        if history_file is not None:
            private_file(history_file)
        history = FileHistory(str(history_file)) if history_file else InMemoryHistory()
        return PromptReader(prompt_session(history))

    def read() -> str:
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:
            line = sys.stdin.readline()
            if not line:
                raise EOFError
            return line.rstrip("\n")
        raw = stream.readline()
        if not raw:
            raise EOFError
        try:
            return raw.decode("utf-8").rstrip("\n")
        except UnicodeDecodeError as exc:
            raise LineError(f"that line is not valid UTF-8 (byte {exc.start}); nothing was sent") from exc

    return read


def run_repl(
    *,
    session: str,
    respond: Respond,
    commands: dict[str, Command],
    read_line: Callable[[], str],
    errors: tuple[type[BaseException], ...] = (),
    out: TextIO = sys.stdout,
    describe: Callable[[BaseException], str] = str,
    header: str | None = None,
    streams: dict[str, Respond] | None = None,
    arguments: dict[str, Callable[[], Iterable[str]]] | None = None,
) -> None:
    """Loop: read a line, run a slash command or a turn, print what happened.

    header: printed under the greeting (where a resumed session left off).
    arguments: /name -> what its argument may be; a read_line with complete_with (prompt_reader's
    on a terminal) gets them, with every command name, for Tab completion.
    """
    streams = streams or {}
    if hasattr(read_line, "complete_with"):
        read_line.complete_with(slash_names(commands, streams), arguments or {})

    def say(text: str) -> None:
        out.write(text)
        out.flush()

    def turn(run: Respond, text: str) -> None:
        try:
            footer = run(text, say)
            say("\n" + (paint(f"[{footer}]", "dim", out) + "\n" if footer else ""))
        except KeyboardInterrupt:
            say("\n" + paint("[cancelled: this turn was not stored]", "dim", out) + "\n")
        except errors as exc:
            say(f"\n{error_line(describe(exc))}\n")

    def error_line(text: str) -> str:
        return f"{paint('error:', 'error', out)} {text}"

    say(f"Chatting in session {session!r}. /help for commands, Ctrl-D to quit.\n")
    if header:
        say(header + "\n")
    while True:
        try:
            line = read_line()
        except EOFError:
            say("\n")
            return
        except KeyboardInterrupt:
            continue  # Ctrl-C at the prompt just clears the line
        except LineError as exc:
            say(error_line(str(exc)) + "\n")
            continue
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("/"):
            name, _, arg = stripped[1:].partition(" ")
            if name in ("quit", "exit", "q"):
                return
            if name == "help":
                say(HELP + "\n")
            elif name in streams:
                turn(streams[name], arg.strip())
            elif name in commands:
                try:
                    say(commands[name](arg.strip()) + "\n")
                except errors as exc:
                    say(error_line(describe(exc)) + "\n")
            else:
                say(f"unknown command /{name}; /help lists the commands\n")
            continue
        turn(respond, line)


def slash_names(commands, streams) -> list[str]:
    """Every /command the loop answers: its own and those it is given (others add theirs)."""
    return sorted({*BUILTINS, *commands, *streams})
