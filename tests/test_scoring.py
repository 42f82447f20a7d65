"""The scorer: normalised whole-word matching and Wilson intervals, on known cases."""

from __future__ import annotations

import pytest

from companion.eval.harness.scoring import is_correct, normalise, wilson


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
    from companion.eval.harness.summary import intrusions

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
    from companion.eval.harness.summary import intrusions
    from companion.eval.modes import MODE_NAMES, Memory, make_modes

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


def test_the_rule_picks_a_recipe_that_recalls_more_unless_it_intrudes_more_than_the_text_would():
    from companion.engine.recipes.base import DEFAULT
    from companion.eval.harness.summary import wilson
    from companion.eval.harness.verdict import verdict_lines

    def cell(right, n=60):
        low, high = wilson(right, n)
        return {"1": {"correct": right, "trials": n, "low": low, "high": high}}

    recall = {f"engram:{DEFAULT}": cell(19), "engram:loud": cell(55), "engram:quiet": cell(40),
              "engram:weak": cell(25)}
    intr = {f"foreign:{DEFAULT}": cell(8), "foreign:loud": cell(55), "foreign:quiet": cell(12),
            "foreign:weak": cell(3), "foreign-transcript": cell(10)}
    lines = verdict_lines({"recall": recall, "answer_nll": {}, "intrusions": intr})
    assert "**quiet**" in lines[0] and f"against {DEFAULT}" in lines[0]
    assert any(x.startswith("- loud: fails: intrudes 55/60") for x in lines)
    assert any(x.startswith("- weak: fails: recall 25/60") for x in lines)
    # without intrusion counts the loudest recall wins, as issue 9's rule alone says
    assert "**loud**" in verdict_lines({"recall": recall, "answer_nll": {}})[0]
    assert verdict_lines({"recall": {"engram:weak": cell(3)}, "answer_nll": {}}) == []


def test_the_chat_guard_fails_a_recipe_whose_next_utterance_nll_is_clearly_worse_than_none():
    from companion.eval.harness.summary import wilson
    from companion.eval.harness.verdict import choose_default

    def cell(right, n=60):
        low, high = wilson(right, n)
        return {"1": {"correct": right, "trials": n, "low": low, "high": high}}

    recall = {"engram:sticky": cell(19), "engram:quiet": cell(40), "engram:calm": cell(36)}
    intr = {"foreign:sticky": cell(8), "foreign:quiet": cell(12), "foreign:calm": cell(11), "foreign-transcript": cell(10)}
    harm = {"sticky": {"mean": -0.13, "low": -0.18, "high": -0.08}, "quiet": {"mean": 0.047, "low": 0.012, "high": 0.083},
            "calm": {"mean": -0.09, "low": -0.12, "high": -0.06}}
    assert choose_default(recall, {}, base="sticky", intrusions=intr)[0] == "quiet"  # recall alone: the louder
    chosen, lines = choose_default(recall, {}, base="sticky", intrusions=intr, harm=harm)
    assert chosen == "calm" and "quiet: fails: harms chat: next-utterance NLL +0.047" in lines[0]
    # an interval that touches 0 is not clearly worse
    harm["quiet"] = {"mean": 0.03, "low": -0.001, "high": 0.06}
    assert choose_default(recall, {}, base="sticky", intrusions=intr, harm=harm)[0] == "quiet"


def test_choose_default_script_reads_saved_runs(tmp_path, capsys):
    import importlib.util
    import json
    from pathlib import Path

    from companion.eval.harness.summary import wilson

    def cell(right, n=60):
        low, high = wilson(right, n)
        return {"1": {"correct": right, "trials": n, "low": low, "high": high}}

    spec = importlib.util.spec_from_file_location("choose", Path(__file__).parents[1] / "scripts" / "research" / "choose_default.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    (tmp_path / "deg").mkdir()
    (tmp_path / "nt").mkdir()
    (tmp_path / "deg" / "results.json").write_text(json.dumps({
        "recall": {"engram:sticky": cell(19), "engram:quiet": cell(40), "engram:calm": cell(36)}, "answer_nll": {},
        "intrusions": {"foreign:quiet": cell(12), "foreign:calm": cell(11), "foreign-transcript": cell(10)}}))
    (tmp_path / "nt" / "summary.json").write_text(json.dumps({"nll": {
        "none": {"mean": 3.2, "low": 3.1, "high": 3.3}, "diff:quiet": {"mean": 0.047, "low": 0.012, "high": 0.083},
        "diff:calm": {"mean": -0.09, "low": -0.12, "high": -0.06}}}))
    args = ["--degradation", str(tmp_path / "deg"), "--base", "sticky"]
    assert script.main(args) == 0 and "**quiet**" in capsys.readouterr().out
    assert script.main(args + ["--next-turn", str(tmp_path / "nt")]) == 0
    assert "**calm**" in capsys.readouterr().out
    assert script.main(["--degradation", str(tmp_path / "deg"), "--base", "nobody"]) == 2
    assert "no engram:nobody row" in capsys.readouterr().err
