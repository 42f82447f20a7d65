"""Tab completion: the REPL's slash commands and session names, the bash and zsh scripts,
and `companion _sessions`, which those scripts run and which must start without torch."""

import doctest
import io
import os
import shutil
import subprocess
import sys
import time

import pytest

from companion.app import cli, completer, quick
from companion.app.repl import run_repl, slash_names
from memory_store import crud, open_store


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("COMPANION_DB", raising=False)
    return tmp_path / "home"


def make_sessions(home, names):
    """Sessions in the store, the last of names the most recently used."""
    home.mkdir(parents=True, exist_ok=True)
    store = open_store(f"sqlite:///{home / 'companion.db'}")
    for name in names:
        with store.session() as db:
            crud.create_session(db, name=name, model_name="m", model_fingerprint="f", engram_config={})
            db.commit()
        time.sleep(0.01)
    store.close()


def test_doctests():
    assert doctest.testmod(completer).failed == 0


def test_the_prompt_toolkit_completer():
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    names = {"switch": lambda: ["trip", "trip-b", "default"]}
    comp = completer.slash_completer(slash_names({"stats": None, "memory": None}, {"more": None}), names)

    def words(text):
        return [(c.text, c.start_position) for c in comp.get_completions(Document(text), CompleteEvent())]

    assert words("/m") == [("memory", -1), ("more", -1)]
    assert words("/q") == [("quit", -1)]  # the REPL's own commands come too
    assert words("/switch tr") == [("trip", -2), ("trip-b", -2)]
    assert words("hello") == []


def test_a_failing_name_lookup_completes_nothing():
    def broken():
        raise OSError("database is locked")

    assert completer.complete("/switch a", ["switch"], {"switch": broken}) == (0, [])


def test_run_repl_hands_its_commands_to_the_reader():
    """Commands added later (by anyone) complete without a list kept in the REPL."""
    got = {}

    class Reader:
        def __call__(self):
            raise EOFError

        def complete_with(self, commands, arguments):
            got.update(commands=commands, arguments=arguments)

    names = lambda: ["a"]  # noqa: E731
    run_repl(session="s", respond=lambda t, o: None, commands={"stats": str, "forget": str},
             streams={"more": None, "retry": None}, arguments={"switch": names}, read_line=Reader(), out=io.StringIO())
    assert got["commands"] == ["exit", "forget", "help", "more", "quit", "retry", "stats"]
    assert got["arguments"] == {"switch": names}


def test_sessions_fast_path(home, capsys):
    assert quick.main(["_sessions"]) == 0 and capsys.readouterr().out == ""  # no database yet
    assert not (home / "companion.db").exists()  # and listing did not create one
    make_sessions(home, ["trip", "default", "trip-b"])
    assert quick.main(["_sessions"]) == 0
    assert capsys.readouterr().out == "trip-b\ndefault\ntrip\n"  # most recently used first
    assert quick.main(["_sessions", "--db", f"sqlite:///{home / 'companion.db'}"]) == 0
    assert capsys.readouterr().out.split() == ["trip-b", "default", "trip"]
    (home / "bad.db").write_text("not a database")
    assert quick.main(["_sessions", "--db", f"sqlite:///{home / 'bad.db'}"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("companion: error: ")


def test_sessions_fast_path_imports_no_torch(home):
    make_sessions(home, ["one"])
    code = ("import sys; from companion.app.quick import main; main(['_sessions']); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, check=True)
    assert out.stdout.splitlines() == ["one", "[]"]


def test_other_commands_go_to_the_cli(home, capsys):
    assert quick.main(["path", "--json"]) == 0
    assert '"config_exists": false' in capsys.readouterr().out


def script(shell, capsys):
    assert cli.main(["completion", shell]) == 0
    return capsys.readouterr().out


def test_the_bash_script(home, tmp_path, capsys):
    text = script("bash", capsys)
    assert "complete -F _companion companion" in text
    path = tmp_path / "companion.bash"
    path.write_text(text)
    subprocess.run(["bash", "-n", str(path)], check=True)

    # Completion driven as bash would, with `companion` on PATH answering `_sessions` only.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "companion"
    fake.write_text('#!/bin/sh\n[ "$1" = _sessions ] && printf "trip\\ntrip-b\\ndefault\\nx$2$3\\n"\n')
    fake.chmod(0o755)
    (tmp_path / "notes.txt").write_text("")
    cases = {
        "companion ch": "chat",
        "companion chat -s tr": "trip trip-b",
        "companion chat --session d": "default",
        "companion say -s trip --temp": "--temperature",
        "companion say -s trip --temperature ": "",
        "companion show t": "trip trip-b",
        "companion fork trip ": "",  # the new name is not an existing session
        "companion rename d": "default",
        "companion delete ": "trip trip-b default x",  # x: the fake got no --db
        f"companion export trip {tmp_path}/no": f"{tmp_path}/notes.txt",
        "companion completion ": "bash zsh",
        "companion --db sqlite:///x.db show --": "--help --json",
        "companion --db sqlite:///x.db show x": "x--dbsqlite:///x.db",  # --db reaches `_sessions`
    }
    driver = "".join(f'COMP_LINE="{line}"; COMP_POINT=${{#COMP_LINE}}; COMPREPLY=(); _companion; '
                     f'echo "${{COMPREPLY[*]}}"\n' for line in cases)
    out = subprocess.run(["bash", "-c", f"source {path}\n{driver}"], capture_output=True, text=True, check=True,
                         env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, cwd=tmp_path)
    assert dict(zip(cases, out.stdout.splitlines())) == cases


def test_the_bash_script_lists_every_subcommand_and_its_options(capsys):
    text = script("bash", capsys)
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.choices and "chat" in a.choices)
    for name, sp in sub.choices.items():
        assert f"        {name}) echo \"" in text
        for action in sp._actions:
            for flag in action.option_strings:
                assert flag in text


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_the_zsh_script_parses(tmp_path, capsys):
    text = script("zsh", capsys)
    assert text.startswith("#compdef companion\n") and "compdef _companion companion" in text
    assert "'(--session -s)'{--session,-s}" in text and ":session:_companion_sessions" in text
    path = tmp_path / "_companion"
    path.write_text(text)
    subprocess.run(["zsh", "-n", str(path)], check=True)


def test_the_zsh_script_without_zsh(capsys):
    text = script("zsh", capsys)
    assert "'completion:print a shell completion script\\: " in text  # _describe needs its colons escaped
    assert "show) _arguments " in text and "':session:_companion_sessions'" in text
    assert "export) _arguments " in text and "':file:_files'" in text
