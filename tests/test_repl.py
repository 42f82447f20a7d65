"""The REPL with callbacks only: scripted lines in, transcript out."""

import io

from companion.app.repl import run_repl


def scripted(lines):
    it = iter(lines)

    def read():
        try:
            item = next(it)
        except StopIteration:
            raise EOFError
        if isinstance(item, BaseException):
            raise item
        return item

    return read


def test_turns_commands_cancel_and_eof():
    sent = []

    def respond(text, on_text):
        if text == "boom":
            on_text("partial")
            raise KeyboardInterrupt
        sent.append(text)
        on_text("echo: ")
        on_text(text)
        return "cycle 1"

    out = io.StringIO()
    run_repl(session="s", respond=respond, commands={"stats": lambda arg: f"stats{arg}"},
             read_line=scripted(["hello", "", "boom", KeyboardInterrupt(), "/stats", "/nope", "/help", "again"]),
             out=out)
    text = out.getvalue()
    assert sent == ["hello", "again"]  # the cancelled turn never reached the store side
    assert "echo: hello\n[cycle 1]" in text
    assert "[cancelled: this turn was not stored]" in text
    assert "stats\n" in text and "unknown command /nope" in text and "/quit" in text


def test_quit_stops_reading_and_errors_are_one_line():
    class Refused(Exception):
        pass

    def respond(text, on_text):
        raise Refused("input is empty")

    out = io.StringIO()
    run_repl(session="s", respond=respond, commands={}, read_line=scripted(["x", "/quit", "never"]),
             errors=(Refused,), out=out)
    assert "error: input is empty" in out.getvalue() and "never" not in out.getvalue()


def test_prompt_toolkit_session_reads_piped_keys():
    """The real prompt-toolkit reader, fed keystrokes through a pipe."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    got = []
    with create_pipe_input() as inp:
        inp.send_text("first line\r/quit\r")
        session = PromptSession(input=inp, output=DummyOutput())
        run_repl(session="s", respond=lambda t, o: got.append(t), commands={},
                 read_line=lambda: session.prompt("> "), out=io.StringIO())
    assert got == ["first line"]
