"""The several-facts measure: its plan, one trial on the tiny model, and the summary's arithmetic."""

from companion.corpora.conversations import DistractorPool
from companion.engine.config import EngramConfig
from companion.engine.cycle import Engine
from companion.eval.harness import several as S
from companion.eval.harness.facts import TEMPLATES


def test_the_plan_tells_distinct_facts_at_their_turns_and_a_same_kind_absent_one():
    settings = S.SeveralSettings(seed=3, facts=4, turns=12)
    told, absent, turns = S.plan(settings, 0, DistractorPool.load("generated"))
    kinds = {t[0]: t[3] for t in TEMPLATES}
    assert len({f.template for f in told}) == 4 and absent.template not in {f.template for f in told}
    assert kinds[absent.template] in {kinds[f.template] for f in told}
    assert len(turns) == 12
    assert [turns[p][0] for p in settings.positions()] == [f.statement for f in told]
    assert S.plan(settings, 0, DistractorPool.load("generated"))[2] == turns  # deterministic


def test_one_trial_asks_every_fact_of_every_row(tiny_lm):
    engines = [Engine(tiny_lm, EngramConfig(layer=2, slots=8, recipe=r)) for r in ("seed", "select-sticky")]
    settings = S.SeveralSettings(facts=2, turns=4, max_new_tokens=3)
    rec = S.live(engines, settings, DistractorPool.load("generated"), 0)
    assert list(rec["answers"]) == ["engram:seed", "engram:select-sticky", "none", "transcript", "retrieval"]
    assert all(len(a["correct"]) == 2 and isinstance(a["intrusion"], bool) for a in rec["answers"].values())


def test_the_summary_counts_what_the_records_say():
    def rec(correct, intrusion):
        return {"facts": [{}, {}], "answers": {"r": {"correct": correct, "intrusion": intrusion}}}

    s = S.summarise([rec([True, True], False), rec([True, False], True), rec([False, False], False)], ["r"])["r"]
    assert s["per_trial"] == [2, 1, 0] and s["mean"] == 1.0 and s["by_position"] == [2, 1]
    assert s["intrusions"] == 1 and s["interval"][0] < 1.0 < s["interval"][1]
