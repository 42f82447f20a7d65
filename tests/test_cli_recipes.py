"""Recipes from the command line: `companion recipes`, `--recipe` on chat and say, and
sessions of non-seed recipes resuming, refusing, exporting and importing.

The CLI runs in-process (companion.app.cli.main) with the tiny random model put in
place of the embedded one, so nothing here loads a real model.
"""

from __future__ import annotations

import functools
import json

import pytest
import torch
from sqlalchemy import update

from companion.app import cli
from companion.app.service import Companion, CompanionError
from companion.app.transfer import export_session, import_session
from companion.engine.config import ConfigError, EngramConfig
from companion.engine.recipes import DEFAULT, PORTABLE, get_recipe, recipe_names
from memory_store import ChatSession, Engram, crud, open_store

SELECT = EngramConfig(layer=2, slots=4, recipe="select-deep")
SMALL = ["--layer", "2", "--slots", "4", "--max-new-tokens", "4"]


@pytest.fixture()
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'c.db'}"


@pytest.fixture()
def run(tiny_lm, tmp_path, monkeypatch, capsys):
    """companion.app.cli.main on the tiny model: returns (exit status, stdout, stderr)."""
    monkeypatch.setenv("COMPANION_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(cli, "Companion", functools.partial(Companion, lm=tiny_lm, quiet=True))

    def go(*argv: str):
        capsys.readouterr()
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return go


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ": error: " in ln]


def counts(store, name):
    with store.session() as db:
        chat = crud.get_session(db, name=name)
        return chat.cycle, len(crud.turns(db, chat=chat)), len(crud.engram_rows(db, chat=chat))


def stored(store, name):
    """The session's recipe and its engrams, oldest first."""
    with store.session() as db:
        chat = crud.get_session(db, name=name)
        config = EngramConfig.from_dict(json.loads(chat.engram_config))
        return config, [crud.load_engram(r) for r in crud.engram_rows(db, chat=chat)]


# --- companion recipes ---------------------------------------------------------------


def test_recipes_json_lists_every_recipe_with_one_default(monkeypatch, capsys):
    def no_model(*a, **k):
        raise AssertionError("`companion recipes` must not load a model or open a store")

    monkeypatch.setattr(cli, "Companion", no_model)
    monkeypatch.setattr("companion.engine.loading.load_model", no_model)
    assert cli.main(["recipes", "--json", "--all"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in table] == recipe_names()
    assert [r["name"] for r in table if r["default"]] == [DEFAULT] == ["select-keep"]
    for r in table:
        recipe = get_recipe(r["name"])
        assert r["description"] == recipe.description
        assert r["writer"]["name"] == recipe.writer.name and r["reader"]["name"] == recipe.reader.name
    assert next(r for r in table if r["name"] == "centred")["fixed"] == ["mean"]
    assert next(r for r in table if r["name"] == "select-deep")["extra_columns"] == 1

    assert cli.main(["recipes", "--all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(recipe_names())
    assert [ln for ln in lines if ln.startswith("*")] == [next(ln for ln in lines if f" {DEFAULT} " in ln)]
    [marked] = [ln for ln in lines if ln.startswith("*")]
    assert "(default)" in marked and marked.split()[:2] == ["*", DEFAULT]


def test_recipes_lists_the_supported_ones_and_all_the_rest(capsys):
    """The user's list is what we stand behind; the experiments stay one flag away, each still runnable."""
    assert cli.main(["recipes", "--json"]) == 0
    supported = [r["name"] for r in json.loads(capsys.readouterr().out)]
    assert supported == ["seed", "select-sticky", "select-chat", "select-keep"]
    assert {DEFAULT, PORTABLE} <= set(supported)
    assert cli.main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "* select-keep" in out and "(default on other models)" in out and "select-quiet" not in out
    assert f"{len(recipe_names()) - 4} experimental recipes" in out and "--all" in out
    assert cli.main(["recipes", "--all"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in recipe_names()) and "(experimental)" in out


def test_version_prints_the_installed_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"companion {version('companion')}"


@pytest.mark.parametrize("command", [["say", "-s", "x", "hi"], ["chat", "-s", "x"]])
def test_unknown_recipe_is_one_line_naming_the_choices(run, url, command):
    code, out, err = run("--db", url, *command, "--recipe", "nope")
    assert code == 2 and out == ""
    [line] = error_lines(err)
    assert "argument --recipe: unknown recipe 'nope'; choose one of" in line
    assert all(name in line for name in recipe_names())
    store = open_store(url)
    with store.session() as db:
        assert crud.list_sessions(db) == []
    store.close()


# --- a select-deep session through the CLI ------------------------------------------------


def test_select_deep_session_resumes_with_its_recipe_and_refuses_another(run, url, tiny_lm):
    code, out, err = run("--db", url, "say", "-s", "sd", "--recipe", "select-deep", *SMALL, "My cactus is Spike.")
    assert code == 0, err
    # resumed without options: the session's own recipe
    code, out, err = run("--db", url, "say", "-s", "sd", "--json", "--max-new-tokens", "4", "And my cat is Tom.")
    assert code == 0, err
    assert json.loads(out)["cycle"] == 2
    # the same recipe named explicitly also resumes
    assert run("--db", url, "say", "-s", "sd", "--recipe", "select-deep", *SMALL, "Hello again.")[0] == 0

    store = open_store(url)
    config, engrams = stored(store, "sd")
    assert config.same_recipe(SELECT)
    assert [tuple(e.shape) for e in engrams] == [(4, tiny_lm.hidden_size + 1)] * 3
    assert get_recipe("select-deep").stored_width(tiny_lm.hidden_size) == tiny_lm.hidden_size + 1

    # seed named, or the portable default implied by --layer/--slots alone
    for other, want in ((["--recipe", "seed", *SMALL], "seed"), (["--layer", "2", "--slots", "4"], PORTABLE)):
        for command in (["say", "-s", "sd", "hi"], ["chat", "-s", "sd"]):
            code, out, err = run("--db", url, *command, *other)
            assert code == 1, (command, other, out, err)
            assert err.strip() == ("companion: error: session 'sd' was built with a different engram recipe "
                                   f"(recipe: select-deep -> {want}); drop the recipe options to resume it, or start "
                                   "a new session")
    assert counts(store, "sd") == (3, 3, 3)
    store.close()

    # show and /stats name the recipe
    code, out, err = run("--db", url, "show", "sd")
    assert code == 0 and "recipe select-deep: layer 2, 4 slots" in out.splitlines()[0]
    comp = Companion(db_url=url, lm=tiny_lm)
    assert comp.stats("sd")["recipe"] == "select-deep: layer 2, 4 slots"
    comp.close()


def test_new_session_gets_the_default_recipe_that_fits(run, url):
    # --layer/--slots without --recipe: the portable default (a trained default's weights were made
    # for the embedded model's layer 16; tests/test_real_path.py: the embedded model gets DEFAULT)
    assert run("--db", url, "say", "-s", "plain", *SMALL, "hi")[0] == 0
    store = open_store(url)
    config, _ = stored(store, "plain")
    store.close()
    assert config.recipe == PORTABLE == "select-sticky" != DEFAULT
    assert config.same_recipe(EngramConfig(layer=2, slots=4, recipe="select-sticky"))


def test_select_deep_session_export_import_is_bit_identical(tiny_lm, url, tmp_path):
    comp = Companion(db_url=url, lm=tiny_lm, config=SELECT, max_new_tokens=4, quiet=True)
    comp.say("sd", "My cactus is called Spike.")
    comp.say("sd", "I keep it on the windowsill.")
    path = tmp_path / "sd.companion"
    export_session(comp.store, "sd", path)
    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    other = open_store(other_url)
    assert import_session(other, path).turns == 2
    a_config, a = stored(comp.store, "sd")
    b_config, b = stored(other, "sd")
    other.close()
    assert a_config == b_config and a_config.recipe == "select-deep"
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        assert x.shape == (4, tiny_lm.hidden_size + 1)
        assert x.dtype == y.dtype and torch.equal(x.view(torch.int32), y.view(torch.int32))
    # the copy resumes exactly like the original
    again = Companion(db_url=other_url, lm=tiny_lm, max_new_tokens=4, quiet=True)
    assert again.say("sd", "What is my cactus called?").reply == comp.say("sd", "What is my cactus called?").reply
    _, a = stored(comp.store, "sd")
    _, b = stored(again.store, "sd")
    assert torch.equal(a[-1], b[-1])
    again.close()
    comp.close()


# --- the centred recipe's fixed-tensor hash ---------------------------------------------


def test_centred_session_with_an_altered_fixed_hash_is_refused(run, tiny_lm, url):
    comp = Companion(db_url=url, lm=tiny_lm, config=EngramConfig(layer=2, slots=4, recipe="centred"),
                     max_new_tokens=4, quiet=True)
    comp.say("c", "My dog is called Biscuit.")
    config, _ = stored(comp.store, "c")
    assert len(config.fixed) == 64 and config.fixed != "0" * 64
    # as if the mean state had come out differently: the session and its engram say another hash
    forged = json.dumps({**config.to_dict(), "fixed": "0" * 64}, sort_keys=True)
    with comp.store.session() as db, db.begin():
        db.execute(update(ChatSession).where(ChatSession.name == "c").values(engram_config=forged))
        db.execute(update(Engram).values(config=forged))
    comp.close()

    for comp in (Companion(db_url=url, lm=tiny_lm, max_new_tokens=4, quiet=True),
                 Companion(db_url=url, lm=tiny_lm, config=EngramConfig(layer=2, slots=4, recipe="centred"),
                           max_new_tokens=4, quiet=True)):
        with pytest.raises(ConfigError) as info:
            comp.say("c", "What is my dog called?")
        message = str(info.value)
        assert len(message.splitlines()) == 1
        assert "recipe 'centred'" in message and "fixed tensors" in message and "000000000000" in message
        assert "start a new session" in message
        assert counts(comp.store, "c") == (1, 1, 1)
        comp.close()

    for command in (["say", "-s", "c", "hi"], ["chat", "-s", "c"]):
        code, out, err = run("--db", url, *command)
        assert code == 1, (out, err)
        [line] = err.strip().splitlines()
        assert line.startswith("companion: error: recipe 'centred'") and "fixed tensors" in line
    store = open_store(url)
    assert counts(store, "c") == (1, 1, 1)
    store.close()


# --- sessions from before recipes ---------------------------------------------------------


def test_legacy_recipe_dict_resumes_as_seed(run, tiny_lm, url):
    """A row written before recipes existed (no `recipe`, no `fixed`) is the seed recipe and keeps going."""
    comp = Companion(db_url=url, lm=tiny_lm, config=EngramConfig(layer=2, slots=4), max_new_tokens=4, quiet=True)
    for name in ("legacy", "today"):
        comp.say(name, "My dog is called Biscuit.")
    legacy = json.dumps({"injection": "prepend-embeds", "layer": 2, "pooling": "chunk-mean",
                         "scaling": "embedding-mean-norm", "slots": 4}, sort_keys=True)
    with comp.store.session() as db, db.begin():
        chat = crud.get_session(db, name="legacy")
        db.execute(update(ChatSession).where(ChatSession.id == chat.id).values(engram_config=legacy))
        db.execute(update(Engram).where(Engram.session_id == chat.id).values(config=legacy))
    comp.close()

    comp = Companion(db_url=url, lm=tiny_lm, max_new_tokens=4, quiet=True)  # no recipe given
    comp.check_resumable("legacy")
    a, b = comp.say("legacy", "What is my dog called?"), comp.say("today", "What is my dog called?")
    assert a.reply == b.reply and a.cycle == b.cycle == 2
    _, la = stored(comp.store, "legacy")
    _, lb = stored(comp.store, "today")
    assert torch.equal(la[-1], lb[-1])
    assert comp.stats("legacy")["recipe"].startswith("seed: layer 2, 4 slots")
    comp.close()
    # the seed recipe named explicitly resumes it; another recipe is refused
    assert run("--db", url, "say", "-s", "legacy", "--recipe", "seed", *SMALL, "hi")[0] == 0
    code, _, err = run("--db", url, "say", "-s", "legacy", "--recipe", "sink", *SMALL, "hi")
    assert code == 1 and "(recipe: seed -> sink)" in err
    store = open_store(url)
    assert counts(store, "legacy") == (3, 3, 3)
    store.close()


def test_unknown_recipe_in_a_stored_row_is_one_line(tiny_lm, url):
    comp = Companion(db_url=url, lm=tiny_lm, config=EngramConfig(layer=2, slots=4), max_new_tokens=4, quiet=True)
    comp.say("w", "hello")
    with comp.store.session() as db, db.begin():
        db.execute(update(ChatSession).values(engram_config=json.dumps(
            {**EngramConfig(layer=2, slots=4).to_dict(), "recipe": "retired"})))
    with pytest.raises(ConfigError, match=r"^unknown recipe 'retired'; choose one of seed, ") as info:
        comp.say("w", "again")
    assert len(str(info.value).splitlines()) == 1
    assert counts(comp.store, "w") == (1, 1, 1)
    comp.close()


def test_store_benchmark_records_the_recipe(tmp_path):
    from companion.eval.benchmarks import recipe_argv, recipe_config, store_roundtrip

    args = cli.build_parser().parse_args(["say", "-s", "b", "--recipe", "select-deep", "--layer", "2", "hi"])
    assert recipe_config(args) == EngramConfig(layer=2, recipe="select-deep")
    assert recipe_argv(args) == ["--recipe", "select-deep", "--layer", "2"]
    url = f"sqlite:///{tmp_path / 'b.db'}"
    r = store_roundtrip(shape=(4, 65), existing=2, reps=2, db_url=url, config=SELECT)
    assert r["engrams_in_db"] == 4
    store = open_store(url)
    config, engrams = stored(store, "store-bench")
    store.close()
    assert config == SELECT and engrams[0].shape == (4, 65)


TRAINED = {"select-trained", "select-trained-hard", "select-mapped", "select-quiet", "select-chat", "select-keep"}  # shipped weights fit the embedded model only


@pytest.mark.parametrize("name", recipe_names())
def test_say_works_for_every_recipe_and_the_session_resumes_with_it(run, url, name):
    code, out, err = run("--db", url, "say", "-s", "r", "--recipe", name, *SMALL, "My cactus is Vornelk.")
    if name in TRAINED:  # refused in one line on the tiny model; tests/test_training.py runs them with
        assert code == 1 and error_lines(err) == [err.strip()] and "hidden size 576" in err  # tiny weights
        assert run("--db", url, "sessions", "--json")[1].strip() in ("", "[]")
        return
    assert code == 0, err
    code, out, err = run("--db", url, "say", "-s", "r", "--json", "--max-new-tokens", "4", "What is it called?")
    assert code == 0, err
    assert json.loads(out)["cycle"] == 2
    store = open_store(url)
    config, engrams = stored(store, "r")
    store.close()
    assert config.recipe == name and len(engrams) == 2 and all(torch.isfinite(e).all() for e in engrams)
