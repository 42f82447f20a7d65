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


# -- multi-line input, /switch, colour (issue 25: habits of a command-line tool) -------------

def piped_prompt(keys):
    """What the terminal prompt returns for these keystrokes (prompt-toolkit through a pipe)."""
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from companion.app.repl import PromptReader, prompt_session

    with create_pipe_input() as inp:
        inp.send_text(keys)
        return PromptReader(prompt_session(input=inp, output=DummyOutput()))()


def test_enter_sends_and_esc_or_alt_enter_adds_a_line():
    assert piped_prompt("one line\r") == "one line"
    assert piped_prompt("first\x1b\rsecond\x1b\rthird\r") == "first\nsecond\nthird"  # Alt-Enter sends ESC CR


def test_a_bracketed_paste_stays_one_message():
    assert piped_prompt("\x1b[200~line one\r\nline two\nline three\x1b[201~\r") == "line one\nline two\nline three"


def test_the_newline_key_is_bound():
    from prompt_toolkit.keys import Keys

    from companion.app.repl import newline_keys

    bound = {b.keys for b in newline_keys().bindings}
    assert bound == {(Keys.Escape, Keys.ControlM)}  # Enter is Ctrl-M to prompt-toolkit


def test_non_terminal_input_stays_a_line_per_message(monkeypatch):
    from companion.app import repl

    monkeypatch.setattr(repl.sys, "stdin", io.TextIOWrapper(io.BytesIO(b"one\ntwo\n")))
    read = repl.prompt_reader()
    assert (read(), read()) == ("one", "two")


class FakeCompanion:
    """What cmd_chat needs of a Companion, recording the session of every call."""

    sessions_now = ["a", "b"]

    def __init__(self, **kw):
        self.store, self.system, self.recall, self.requested_config = None, kw["system"], kw["recall"], kw["config"]
        self.calls = []

    def check_resumable(self, name):
        if name == "wrong-model":
            raise ValueError("session 'wrong-model' was made with another model")
        self.calls.append(("check", name))

    def warm_up(self, name):
        self.calls.append(("warm", name))

    def exists(self, name):
        return name in self.sessions_now

    def sessions(self):
        return [type("S", (), {"name": n}) for n in self.sessions_now]

    def say(self, name, text, on_text):
        self.calls.append(("say", name, text))
        on_text(f"reply in {name}")
        return type("R", (), {"cut": False})

    def close(self):
        pass


def test_switch_moves_the_chat_to_another_session(tmp_path, monkeypatch):
    import functools

    from companion.app import cli

    monkeypatch.setenv("COMPANION_HOME", str(tmp_path))
    buf = io.StringIO()
    monkeypatch.setattr(cli, "run_repl", functools.partial(run_repl, out=buf))
    made = []
    monkeypatch.setattr(cli, "Companion", lambda **kw: made.append(FakeCompanion(**kw)) or made[-1])
    monkeypatch.setattr(cli, "resume_header", lambda store, name, **kw: f"Resuming {name!r}" if name in "ab" else None)
    monkeypatch.setattr(cli, "footer_line", lambda report: "cycle n")
    lines = ["hi", "/switch", "/switch b", "there", "/switch wrong-model", "still b", "/switch new-one", "x"]
    monkeypatch.setattr(cli, "prompt_reader", lambda _path: scripted(lines))
    assert cli.main(["chat", "-s", "a"]) == 0
    out = buf.getvalue()
    calls = made[0].calls
    assert [c[1:] for c in calls if c[0] == "say"] == [("a", "hi"), ("b", "there"), ("b", "still b"), ("new-one", "x")]
    assert ("check", "b") in calls and ("warm", "new-one") in calls
    assert "in session 'a'" in out and "Resuming 'b'" in out and "new session 'new-one'" in out
    assert "error: session 'wrong-model' was made with another model" in out


def test_switch_names_complete_from_the_store(tmp_path, monkeypatch):
    from companion.app import cli

    monkeypatch.setenv("COMPANION_HOME", str(tmp_path))
    monkeypatch.setattr(cli, "Companion", FakeCompanion)
    monkeypatch.setattr(cli, "resume_header", lambda store, name, **kw: None)
    got = {}

    class Reader:
        def __call__(self):
            raise EOFError

        def complete_with(self, commands, arguments):
            got.update(commands=commands, names=arguments["switch"]())

    monkeypatch.setattr(cli, "prompt_reader", lambda _path: Reader())
    assert cli.main(["chat", "-s", "a"]) == 0
    assert {"switch", "history", "more", "help", "quit"} <= set(got["commands"]) and got["names"] == ["a", "b"]


class Terminal(io.StringIO):
    def isatty(self):
        return True


def coloured_run(monkeypatch, no_color, out):
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    monkeypatch.delenv("TERM", raising=False)

    def respond(text, on_text):
        if text == "bad":
            raise ValueError("refused")
        on_text("ok")
        return "cycle 1"

    run_repl(session="s", respond=respond, commands={}, read_line=scripted(["hi", "bad"]), errors=(ValueError,),
             out=out)
    return out.getvalue()


def test_colour_on_a_terminal_unless_no_color(monkeypatch):
    import doctest

    from companion.app import colour

    assert doctest.testmod(colour).failed == 0
    text = coloured_run(monkeypatch, None, Terminal())
    assert "\x1b[2m[cycle 1]\x1b[0m" in text and "\x1b[31merror:\x1b[0m refused" in text
    assert "\x1b[" in coloured_run(monkeypatch, "", Terminal())  # NO_COLOR="" does not count (no-color.org)
    for plain in (coloured_run(monkeypatch, "1", Terminal()), coloured_run(monkeypatch, None, io.StringIO())):
        assert "\x1b" not in plain and "[cycle 1]" in plain and "error: refused" in plain


def test_cli_error_line_colour(monkeypatch, tmp_path):
    from companion.app import cli

    monkeypatch.setenv("COMPANION_HOME", str(tmp_path))
    (tmp_path / "config.toml").write_text("nonsense = 1\n")
    for no_color, want in ((None, "\x1b[31mcompanion: error:\x1b[0m "), ("1", "companion: error: ")):
        if no_color is None:
            monkeypatch.delenv("NO_COLOR", raising=False)
        else:
            monkeypatch.setenv("NO_COLOR", no_color)
        monkeypatch.setattr(cli.sys, "stderr", Terminal())
        assert cli.main(["say", "-s", "s", "hi"]) == 1
        err = cli.sys.stderr.getvalue()
        assert err.startswith(want) and err.count("\n") == 1


def test_prompt_toolkit_honours_no_color(monkeypatch):
    from prompt_toolkit.output import ColorDepth

    monkeypatch.setenv("NO_COLOR", "1")
    assert ColorDepth.default() == ColorDepth.DEPTH_1_BIT
