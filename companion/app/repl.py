"""The chat REPL. It knows nothing about models or storage: it gets callbacks.

    respond(text, on_text) runs one turn, streaming the reply through on_text,
    and returns a short footer line (or None). KeyboardInterrupt inside it
    cancels that turn only; EOF (Ctrl-D) or /quit ends the loop.
    commands map /name to a function of the argument returning text; streams
    map /name to a turn like respond's (/more), fed the argument instead of text.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, TextIO

Respond = Callable[[str, Callable[[str], None]], "str | None"]
Command = Callable[[str], str]

HELP = """Type a message and press Enter. Ctrl-C cancels a reply (nothing is stored); Ctrl-D quits.
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
/quit        leave (the session is already saved after every turn)"""


class LineError(ValueError):
    """A line that cannot be read as text; the REPL reports it and reads the next one."""


def private_file(path: Path) -> Path:
    """Create path if missing and make it owner-only: the input history holds what the user typed."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    os.chmod(path, 0o600)
    return path


def prompt_reader(history_file: Path | None = None) -> Callable[[], str]:
    """A line reader: prompt-toolkit on a terminal, plain stdin lines otherwise."""
    if sys.stdin.isatty():
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, InMemoryHistory

        if history_file is not None:
            private_file(history_file)
        history = FileHistory(str(history_file)) if history_file else InMemoryHistory()
        # Pasted multi-line text arrives whole (bracketed paste) and is sent as one message.
        session = PromptSession(history=history)
        return lambda: session.prompt("> ")

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
) -> None:
    """Loop: read a line, run a slash command or a turn, print what happened.

    header: printed under the greeting (where a resumed session left off).
    """
    streams = streams or {}

    def say(text: str) -> None:
        out.write(text)
        out.flush()

    def turn(run: Respond, text: str) -> None:
        try:
            footer = run(text, say)
            say("\n" + (f"[{footer}]\n" if footer else ""))
        except KeyboardInterrupt:
            say("\n[cancelled: this turn was not stored]\n")
        except errors as exc:
            say(f"\nerror: {describe(exc)}\n")

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
            say(f"error: {exc}\n")
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
                    say(f"error: {describe(exc)}\n")
            else:
                say(f"unknown command /{name}; /help lists the commands\n")
            continue
        turn(respond, line)
