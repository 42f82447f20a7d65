"""The degradation-over-cycles harness: planted facts, distractors, scoring, runner, report."""

from companion.corpora.conversations import DistractorPool

from .degradation import run
from .facts import TEMPLATES, Fact, facts_for, leaks, make_fact
from .scoring import is_correct, normalise, wilson
from .summary import aggregate
from .trial import FULL, LONG, QUICK, HarnessError, RunSettings, Trial

__all__ = ["FULL", "LONG", "QUICK", "DistractorPool", "Fact", "HarnessError", "RunSettings", "TEMPLATES", "Trial",
           "aggregate", "facts_for", "is_correct", "leaks", "make_fact", "normalise", "run", "wilson"]
