"""Seeing and correcting the memory (issue 25): /memory, forget, undo, retry on the tiny model, through the
service, the CLI and the REPL; what they store, what they refuse in one line, and export/import/fork of it."""

from __future__ import annotations

import io
import json

import pytest

from companion.app import cli
from companion.app.memory import forget, memory_view, undo
from companion.app.memory_commands import memory_commands
from companion.app.repl import run_repl
from companion.app.service import Companion, CompanionError
from companion.app.transfer import export_session, import_session
from companion.engine.config import EngramConfig
from companion.engine.sources import normal
from memory_store import crud

WORDS = EngramConfig(layer=2, slots=8, recipe="select-words")
FACT = "My cactus is called Vornelk."


@pytest.fixture()
def comp(tiny_lm, tmp_path):
    c = Companion(db_url=f"sqlite:///{tmp_path / 'c.db'}", lm=tiny_lm, config=WORDS, max_new_tokens=3, quiet=True)
    yield c
    c.close()


def _digest(comp, name):
    with comp.store.session() as db:
        chat = crud.get_session(db, name=name)
        return (chat.cycle, [(t.index, t.user_text, t.reply_text) for t in crud.turns(db, chat=chat)],
                [(e.cycle, e.sha256, e.sources) for e in crud.engram_rows(db, chat=chat)])


def test_memory_shows_the_words_the_slots_came_from_with_turn_and_score(comp):
    comp.say("s", FACT)
    comp.say("s", "Zebras dance quietly on Tuesdays.")
    view = memory_view(comp.store, "s")
    assert view.slots == sum(len(w.slots) for w in view.words) <= 8 and view.cycle == 2
    assert all(w.turn in (1, 2) and w.score is not None for w in view.words)
    said = {normal(t) for t in (FACT + " Zebras dance quietly on Tuesdays.").split()}
    # every word held is (a piece of) what was said in those turns or their replies
    assert all(w.text for w in view.words)
    assert sorted(i for w in view.words for i in w.slots) == list(range(view.slots))
    assert any(normal(w.text) in said for w in view.words)


def test_forget_takes_the_word_out_as_a_new_revision_and_later_turns_refill(comp):
    comp.say("s", FACT)
    held = memory_view(comp.store, "s")
    target = next(w for w in held.words if w.turn == 1 and len(normal(w.text)) > 2)
    before = _digest(comp, "s")
    report = forget(comp.store, "s", text=target.text)
    assert [w.text for w in report.removed][0] == target.text
    assert report.slots_after == report.slots_before - sum(len(w.slots) for w in report.removed)
    after = memory_view(comp.store, "s")
    assert normal(target.text) not in {normal(w.text) for w in after.words}
    assert after.slots == report.slots_after
    cycle, turns, engrams = _digest(comp, "s")
    assert (cycle, turns) == before[:2] and engrams[0][1] != before[2][0][1]  # same turns, engram rewritten
    info, _ = comp.show("s")
    assert info["forgets"][0]["asked"] == target.text and info["forgets"][0]["cycle"] == 1
    assert "forgot " + target.text in cli_output(comp, ["show", "s"])
    comp.say("s", "Zebras dance quietly on Tuesdays and Thursdays too.")
    assert memory_view(comp.store, "s").slots >= report.slots_after  # the freed slots fill again


def cli_output(comp, argv, capsys=None):
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert cli.main(["--db", str(comp.store.url), *argv]) == 0
    return buf.getvalue()


def test_forget_by_turn_and_everything_forgotten_then_the_session_goes_on(comp):
    comp.say("s", FACT)
    report = forget(comp.store, "s", turn=1)
    assert report.slots_after == 0 or all(w.turn != 1 for w in memory_view(comp.store, "s").words)
    comp.say("s", "Another turn after forgetting.")  # an emptied engram is read as no memory, then refilled
    assert memory_view(comp.store, "s").slots > 0


@pytest.mark.parametrize("kwargs, message", [
    ({"text": "Brindlewick"}, "nothing in session 's'"),
    ({"text": "   "}, "forget what?"),
    ({"turn": 7}, "there is no turn 7"),
])
def test_bad_forgets_are_one_line_and_store_nothing(comp, kwargs, message):
    comp.say("s", FACT)
    before = _digest(comp, "s")
    with pytest.raises(CompanionError, match=message) as err:
        forget(comp.store, "s", **kwargs)
    assert "\n" not in str(err.value) and _digest(comp, "s") == before


def test_forget_refuses_averaging_recipes_and_unknown_sessions(tiny_lm, tmp_path):
    seed = Companion(db_url=f"sqlite:///{tmp_path / 's.db'}", lm=tiny_lm, config=EngramConfig(layer=2, slots=4),
                     max_new_tokens=2, quiet=True)
    seed.say("a", FACT)
    assert memory_view(seed.store, "a").averaged
    with pytest.raises(CompanionError, match="averages"):
        forget(seed.store, "a", text="cactus")
    with pytest.raises(CompanionError, match="no session named"):
        forget(seed.store, "nope", text="x")


def test_undo_goes_back_to_the_memory_before_and_refuses_an_empty_session(comp):
    comp.say("s", FACT)
    one = _digest(comp, "s")
    comp.say("s", "Zebras dance quietly on Tuesdays.")
    forget(comp.store, "s", turn=2)
    assert undo(comp.store, "s") == (2, "Zebras dance quietly on Tuesdays.")
    assert _digest(comp, "s") == one
    assert comp.show("s")[0]["forgets"] == []  # the forget of the dropped engram went with it
    report = comp.say("s", "Something else.")
    assert report.cycle == 2
    undo(comp.store, "s")
    undo(comp.store, "s")
    with pytest.raises(CompanionError, match="nothing to undo"):
        undo(comp.store, "s")


def test_retry_replaces_the_last_turn_from_the_same_memory(comp):
    comp.say("s", FACT)
    first = comp.say("s", "What is my cactus called?")
    before = _digest(comp, "s")
    again = comp.retry("s")
    after = _digest(comp, "s")
    assert again.cycle == 2 and after[0] == 2 and len(after[1]) == 2
    assert after[1][1][1] == "What is my cactus called?"
    # greedy: the same memory gives the same reply and engram (a retry does not see its own first try)
    assert again.reply == first.reply and after[2] == before[2]
    with pytest.raises(CompanionError, match="nothing to retry"):
        comp.retry("empty")


def test_export_import_and_fork_carry_sources_and_forgets(comp, tmp_path):
    comp.say("s", FACT)
    comp.say("s", "Zebras dance quietly on Tuesdays.")
    forget(comp.store, "s", turn=1)
    view = memory_view(comp.store, "s")
    export_session(comp.store, "s", tmp_path / "s.safetensors")
    import_session(comp.store, tmp_path / "s.safetensors", name="t")
    cli.main(["--db", str(comp.store.url), "fork", "s", "u"])
    for other in ("t", "u"):
        moved = memory_view(comp.store, other)
        assert [(w.text, w.turn, w.slots) for w in moved.words] == [(w.text, w.turn, w.slots) for w in view.words]
        assert [f["asked"] for f in moved.forgets] == ["turn 1"]


def test_the_repl_shows_forgets_undoes_and_retries(comp):
    comp.say("s", FACT)
    target = next(w for w in memory_view(comp.store, "s").words if w.turn == 1 and len(normal(w.text)) > 2)
    commands, streams = memory_commands(comp, lambda: "s")
    lines = iter(["/memory", f"/forget {target.text}", "/memory", "/forget Brindlewick", "/forget --turn x",
                  "/retry", "/undo", "/undo", "/memory"])

    def read():
        try:
            return next(lines)
        except StopIteration:
            raise EOFError

    out = io.StringIO()
    run_repl(session="s", respond=lambda t, o: None, commands=commands, streams=streams, read_line=read, out=out,
             errors=(CompanionError, ValueError), describe=str)
    text = out.getvalue()
    assert f"forgot {target.text} (turn 1)" in text
    assert "nothing in session 's'" in text and "/forget --turn takes one turn number" in text
    assert "retried: cycle 1" in text and "undid turn 1" in text and "nothing to undo" in text
    assert "(empty: no turns yet)" in text
    assert text.count("error:") == 3


def test_memory_json_from_the_cli(comp):
    comp.say("s", FACT)
    data = json.loads(cli_output(comp, ["memory", "s", "--json"]))
    assert data["slots"] == sum(len(w["slots"]) for w in data["words"]) and data["recipe"] == "select-words"


def test_an_engram_stored_before_sources_shows_unknown_and_cannot_be_forgotten_by_word(comp):
    comp.say("s", FACT)
    with comp.store.session() as db, db.begin():
        chat = crud.get_session(db, name="s")
        crud.engram_rows(db, chat=chat)[0].sources = None
    view = memory_view(comp.store, "s")
    assert all(w.turn is None and w.text == "?" for w in view.words)
    with pytest.raises(CompanionError, match="before slots kept their sources"):
        forget(comp.store, "s", text="cactus")
