"""Sessions stored before the house move (commit dfec764) resume today bit for bit.

tests/fixtures/make_premove_sessions.py made them with that commit's code: two
turns each for every recipe that was ever a default, then recorded the engram and
reply of a third. Today's code, given the stored sessions, must make exactly those.
"""

import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from companion.app.service import Companion
from companion.engine.config import EngramConfig
from memory_store import crud

FIXTURES = Path(__file__).parent / "fixtures"
RECIPES = ("seed", "select-sticky", "select-quiet", "select-chat")
NEXT = "What is my cactus called?"


@pytest.fixture()
def premove(tmp_path, monkeypatch):
    for env in ("COMPANION_QUIET_WEIGHTS", "COMPANION_CHAT_WEIGHTS"):
        monkeypatch.setenv(env, str(FIXTURES / "tiny_map.safetensors"))
    db = tmp_path / "premove.db"
    shutil.copy(FIXTURES / "premove_sessions.db", db)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the fixture was written on one thread (make_seed_engram.py says why)
    yield f"sqlite:///{db}"
    torch.set_num_threads(threads)


def _latest(store, name):
    with store.session() as db:
        return crud.latest_engram(db, chat=crud.get_session(db, name=name))[0]


@pytest.mark.parametrize("recipe", RECIPES)
def test_a_session_made_before_the_move_resumes_bit_for_bit(premove, tiny_lm, recipe):
    with safe_open(str(FIXTURES / "premove_next.safetensors"), "pt") as f:
        want, reply = f.get_tensor(recipe), f.metadata()[f"reply:{recipe}"]
    comp = Companion(db_url=premove, lm=tiny_lm, max_new_tokens=6, quiet=True)
    try:
        assert comp.stats(recipe)["recipe"].startswith(f"{recipe}: layer 2, 8 slots")
        report = comp.say(recipe, NEXT)
        assert report.cycle == 3
        assert report.reply == reply
        assert torch.equal(_latest(comp.store, recipe), want)
    finally:
        comp.close()


def test_the_fixture_is_not_what_a_fresh_session_makes(premove, tiny_lm):
    """The stored history matters: a new session asked the same question makes another engram."""
    with safe_open(str(FIXTURES / "premove_next.safetensors"), "pt") as f:
        want = f.get_tensor("select-sticky")
    fresh = Companion(db_url=premove, lm=tiny_lm, config=EngramConfig(layer=2, slots=8, recipe="select-sticky"),
                      max_new_tokens=6, quiet=True)
    try:
        fresh.say("fresh", NEXT)
        assert not torch.equal(_latest(fresh.store, "fresh"), want)
    finally:
        fresh.close()
