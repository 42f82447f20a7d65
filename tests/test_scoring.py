"""The scorer: normalised whole-word matching and Wilson intervals, on known cases."""

from __future__ import annotations

import pytest

from companion.harness.scoring import is_correct, normalise, wilson


def test_normalise():
    assert normalise("The code is 4,817!") == "code is 4817"
    assert normalise("  An   APPLE; a pear. ") == "apple pear"


@pytest.mark.parametrize("reply,answer,aliases,expected", [
    ("Your cactus is called Vornelk.", "Vornelk", (), True),
    ("vornelk", "Vornelk", (), True),
    ('In my family, "vaimourk" means cozy', "vaimourk", (), True),
    ("Tomorrow I will see Tomas.", "Tom", (), False),  # a substring is not the answer
    ("The code is 48170.", "4817", (), False),
    ("The code is 4,817.", "4817", (), True),
    ("It's on 12th of July.", "July 12", ("12 july", "12th of july"), True),
    ("It's on July 21.", "July 12", ("12 july", "12th of july"), False),
    ("I don't know.", "Vornelk", (), False),
    ("", "Vornelk", (), False),
    ("the the the", "the", (), False),  # an answer that normalises to nothing never matches
])
def test_known_cases(reply, answer, aliases, expected):
    assert is_correct(reply, answer, aliases) is expected


def test_wilson_known_values():
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    lo, hi = wilson(10, 10)
    assert lo == pytest.approx(0.7225, abs=1e-3) and hi == pytest.approx(1.0)
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)


def test_wilson_narrows_with_more_trials():
    a, b = wilson(5, 10), wilson(50, 100)
    assert b[1] - b[0] < a[1] - a[0]


def test_intrusions_count_the_foreign_engrams_own_answer_in_foreign_rows_only():
    from companion.harness.summary import intrusions

    def trial(replies: dict[str, str]) -> dict:
        return {"foreign_fact": {"answer": "July 12", "aliases": ["12th of july"]},
                "probes": [{"k": 1, "answers": {m: {"reply": r} for m, r in replies.items()}}]}

    trials = [trial({"foreign:x": "It is July 12.", "engram:x": "July 12", "none": "July 12"}),
              trial({"foreign:x": "On the 12th of July!", "engram:x": "?", "none": "?"}),
              trial({"foreign:x": "I don't know.", "engram:x": "?", "none": "?"}),
              trial({"foreign:x": "July 1", "engram:x": "?", "none": "?"})]
    got = intrusions(trials, ["engram:x", "foreign:x", "none"], [1])
    assert list(got) == ["foreign:x"]
    assert (got["foreign:x"]["1"]["correct"], got["foreign:x"]["1"]["trials"]) == (2, 4)
    assert got["foreign:x"]["1"]["low"] < 0.5 < got["foreign:x"]["1"]["high"]


def test_the_foreign_transcript_holds_the_other_sessions_words_and_counts_as_an_intrusion_row():
    from companion.harness.summary import intrusions
    from companion.modes import MODE_NAMES, Memory, make_modes

    own = Memory(turns=[("My cactus is called Vornelk.", "Nice!")])
    other = Memory(turns=[("We married on July 12.", "Congratulations!")])
    p = make_modes()["foreign-transcript"].prompt(own, "What is my cactus called?", other)
    assert p.engram is None and "July 12" in p.context and "Vornelk" not in p.context
    assert "foreign-transcript" not in MODE_NAMES  # opt-in: default runs ask what they asked before
    trials = [{"foreign_fact": {"answer": "July 12"},
               "probes": [{"k": 0, "answers": {"foreign-transcript": {"reply": "July 12?"},
                                               "transcript": {"reply": "July 12?"}}}]}]
    got = intrusions(trials, ["transcript", "foreign-transcript"], [0])
    assert list(got) == ["foreign-transcript"] and got["foreign-transcript"]["0"]["correct"] == 1
