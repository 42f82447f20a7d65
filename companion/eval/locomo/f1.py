"""LoCoMo scoring: token-level F1 as the LoCoMo paper computes it, and a "declines" detector.

Normalisation follows the paper's evaluation (SQuAD style): lowercase, drop
commas and punctuation, drop the articles a/an/the, collapse whitespace. The
paper also Porter-stems tokens; this scorer does not (no stemmer dependency),
so its F1 is slightly stricter on inflections ("paints" vs "painting").

Per category, as in the paper: multi-hop (1) answers are comma-separated
lists, scored as the mean over gold parts of the best F1 against any
comma-separated part of the reply; open-domain (3) gold answers keep only
the part before ';'; temporal (2) and single-hop (4) are plain token F1.
Adversarial (5) questions have no answer in the conversation: the reply is
scored on whether it declines.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation) | {"\u2018", "\u2019", "\u201c", "\u201d", "\u2014", "\u2013"}

DECLINE_PHRASES = (
    "not mentioned", "no information", "not enough information", "don't know", "do not know",
    "dont know", "cannot", "can't", "can not", "not sure", "no mention", "not specified",
    "not stated", "unknown", "no idea", "not provided", "no record", "not available",
    "unable to", "i'm not aware", "i am not aware", "not aware of", "doesn't say", "does not say",
    "didn't mention", "did not mention", "wasn't mentioned", "was not mentioned", "no details",
)


def normalize(text: str) -> str:
    text = str(text).lower().replace(",", "")
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize(prediction).split(), normalize(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def multi_f1(prediction: str, gold: str) -> float:
    preds = [p.strip() for p in str(prediction).split(",")] or [""]
    golds = [g.strip() for g in str(gold).split(",") if g.strip()] or [""]
    return sum(max(token_f1(p, g) for p in preds) for g in golds) / len(golds)


def locomo_f1(prediction: str, gold: str, category: int) -> float:
    """F1 of one reply against one gold answer, per the paper's category rules (1-4)."""
    if category == 1:
        return multi_f1(prediction, gold)
    if category == 3:
        gold = str(gold).split(";")[0]
    return token_f1(prediction, gold)


def declines(reply: str) -> bool:
    """Whether a reply says the conversation does not hold the answer."""
    text = " " + str(reply).lower().replace("\u2019", "'") + " "
    return any(p in text for p in DECLINE_PHRASES) or bool(re.search(r"\bno(t)? (one|such)\b", text))
