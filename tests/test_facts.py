"""The planted-fact generator: deterministic by seed, varied, and never leaking the answer."""

from __future__ import annotations

import random

import pytest

from companion.eval.harness.facts import TEMPLATES, Fact, facts_for, foreign_trial, leaks, make_fact, trial_fact
from companion.eval.harness.scoring import is_correct


def test_same_seed_same_facts_other_seed_other_facts():
    a = [facts_for(7, i) for i in range(20)]
    assert a == [facts_for(7, i) for i in range(20)]
    b = [facts_for(8, i) for i in range(20)]
    assert a != b


def test_many_distinct_templates_are_used():
    assert len({t[0] for t in TEMPLATES}) >= 15
    used = {facts_for(0, i)[0].template for i in range(300)}
    assert len(used) >= 15


@pytest.mark.parametrize("seed", range(5))
def test_no_answer_word_in_the_question(seed):
    for i in range(200):
        for fact in facts_for(seed, i):
            assert not leaks(fact), fact
            q = fact.question.lower()
            assert fact.answer.lower() not in q
            for alias in fact.aliases:
                assert alias.lower() not in q


def test_statement_holds_the_answer_and_question_is_worded_differently():
    for i in range(200):
        fact, _ = facts_for(3, i)
        assert is_correct(fact.statement, fact.answer, fact.aliases)
        assert fact.question.strip().lower() != fact.statement.strip().lower()
        assert fact.question.rstrip().endswith("?")


def test_foreign_fact_is_the_fact_of_the_next_trial_with_another_template():
    for i in range(100):
        j = foreign_trial(2, i)
        assert j > i and facts_for(2, i)[1] == trial_fact(2, j) == facts_for(2, j)[0]
        assert all(trial_fact(2, m).template == trial_fact(2, i).template for m in range(i + 1, j))


def test_foreign_fact_comes_from_another_template():
    for i in range(100):
        fact, foreign = facts_for(1, i)
        assert fact.template != foreign.template
        assert fact.answer != foreign.answer


def test_leak_detector_catches_a_leaking_fact():
    bad = Fact("x", "My cat is Zorb.", "Is my cat called Zorb?", "Zorb")
    assert leaks(bad)


def test_template_can_be_forced_and_excluded():
    rng = random.Random(0)
    assert make_fact(rng, template="cactus").template == "cactus"
    with pytest.raises(ValueError):
        make_fact(rng, template="cactus", exclude=("cactus",))
