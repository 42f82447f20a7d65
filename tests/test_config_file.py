"""config.toml: flag over file over built-in, a bad file refused in one line, `companion path`.

The real `companion.app.cli.main` runs with `say` swapped for a probe that builds the
Companion as `say` would and records it: no model is loaded.
"""

import doctest
import json

import pytest

from companion.app import cli, config_file, paths
from memory_store import crud, open_store


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("COMPANION_DB", raising=False)
    return tmp_path / "home"


@pytest.fixture()
def probe(home, monkeypatch):
    """run(*argv) -> the Companion `say` would have used (None if say never ran), its session recipe."""
    seen = {}

    def fake_say(args):
        comp = cli._companion(args)
        cli._for_session(comp, args, args.session)
        seen["comp"] = comp
        return 0

    monkeypatch.setattr(cli, "cmd_say", fake_say)

    def run(*argv, status=0):
        seen.clear()
        assert cli.main(["say", "-s", "s", *argv, "hi"]) == status
        comp = seen.get("comp")
        if comp is not None:
            comp.close()
        return comp

    return run


def write(home, text):
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(text)
    return home / "config.toml"


def test_doctests():
    for module in (config_file, paths):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_no_file_keeps_the_built_in_defaults(probe):
    comp = probe()
    assert comp.sampling.greedy and comp.sampling.top_p == 1.0 and comp.sampling.seed is None
    assert comp.max_new_tokens == 200 and comp.recall is None and comp.system is None
    assert comp.model_spec is None and comp.requested_config is None


def test_the_file_beats_the_defaults_and_flags_beat_the_file(home, probe):
    write(home, 'model = "some/model"\ntemperature = 0.7\ntop_p = 0.9\nseed = 7\nrecall = 3\n'
                'max_new_tokens = 64\nsystem = "Be brief."\n')
    comp = probe()
    assert (comp.sampling.temperature, comp.sampling.top_p, comp.sampling.seed) == (0.7, 0.9, 7)
    assert (comp.model_spec, comp.recall, comp.max_new_tokens, comp.system) == ("some/model", 3, 64, "Be brief.")

    comp = probe("--temperature", "1.2", "--seed", "1", "--recall", "0", "--max-new-tokens", "9",
                 "--system", "", "--model", "other")
    assert (comp.sampling.temperature, comp.sampling.top_p, comp.sampling.seed) == (1.2, 0.9, 1)
    assert (comp.model_spec, comp.recall, comp.max_new_tokens, comp.system) == ("other", 0, 9, "")


def test_a_greedy_flag_turns_off_the_files_sampling(home, probe):
    write(home, "temperature = 0.7\ntop_p = 0.9\nseed = 7\n")
    comp = probe("--temperature", "0")
    assert comp.sampling.greedy and comp.sampling.top_p == 1.0 and comp.sampling.seed is None


def test_the_files_recipe_is_for_new_sessions_only(home, probe):
    write(home, 'recipe = "seed"\n')
    assert probe().requested_config.recipe == "seed"  # "s" does not exist yet
    store = open_store(f"sqlite:///{home / 'companion.db'}")
    with store.session() as db:
        crud.create_session(db, name="s", model_name="m", model_fingerprint="f", engram_config={})
        db.commit()
    store.close()
    assert probe().requested_config is None  # an existing session keeps its own recipe
    assert probe("--recipe", "select-sticky").requested_config.recipe == "select-sticky"  # a flag still binds


@pytest.mark.parametrize("text, says", [
    ("temprature = 0.5\n", "unknown key 'temprature'"),
    ('recall = "3"\n', "recall: must be a whole number, not a string"),
    ("seed = true\n", "seed: must be a whole number, not a boolean"),
    ("max_new_tokens = 2.5\n", "max_new_tokens: must be a whole number, not a number"),
    ("temperature = -1\n", "temperature: -1 is below 0"),
    ("top_p = 0\n", "top_p: 0 is out of range"),
    ("recall = 10000\n", "recall: 10000 is out of range"),
    ('recipe = "nope"\n', "recipe: unknown recipe 'nope'"),
    ('model = ""\n', "model: is empty"),
    ("[chat]\ntemperature = 1\n", "unknown key 'chat'"),
    ("temperature = 0.5\nseed = \n", "not valid TOML: Invalid value (at line 2, column 8)"),
])
def test_a_bad_file_is_one_line_and_nothing_runs(home, probe, capsys, text, says):
    path = write(home, text)
    assert probe(status=1) is None  # say never ran
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"companion: error: {path}: ") and says in err, err
    assert not (home / "companion.db").exists()  # nothing opened, nothing created


def test_a_file_that_is_not_utf8(home, probe, capsys):
    home.mkdir(parents=True)
    (home / "config.toml").write_bytes(b'system = "\xff"\n')
    assert probe(status=1) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.toml: not valid UTF-8 (byte 10)" in err


def test_commands_without_model_options_ignore_the_file(home, capsys):
    write(home, "nonsense = 1\n")
    assert cli.main(["sessions"]) == 0  # a bad file never blocks listing, or finding it
    assert cli.main(["path"]) == 0
    assert "config.toml" in capsys.readouterr().out


def test_path_json_names_everything_and_hides_the_password(home, capsys):
    assert cli.main(["path", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got == {"data": str(home), "database": f"sqlite:///{home / 'companion.db'}",
                   "models": str(home / "models"), "config": str(home / "config.toml"), "config_exists": False,
                   "history": str(home / "history")}
    write(home, "recall = 1\n")
    assert cli.main(["--db", "postgresql+psycopg://me:secret@db.example/companion", "path", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["config_exists"] is True and got["database"] == "postgresql+psycopg://me:***@db.example/companion"
    assert cli.main(["path"]) == 0
    text = capsys.readouterr().out
    assert "config file" in text and "(none yet" not in text and not (home / "models").exists()
