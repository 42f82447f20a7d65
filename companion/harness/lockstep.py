"""Many degradation trials lived side by side: the harness's throughput path.

The trials' sessions (each trial's own and its foreign twin, per recipe) take
their turns together, one `absorb_many` pass per recipe and step, and the
questions of every trial for a mode row are answered with one `answer_many`
call (and their answer NLLs measured with one `nll_many` call). The records
equal what `Trial.run` gives one trial at a time (the batched primitives are
tested equal to the one-at-a-time ones).
"""

from __future__ import annotations

import time

from ..batch import absorb_many, answer_many
from ..cycle import InputTooLongError, chat_ids
from ..modes import Memory, with_context
from .trial import ACK, Trial
from .nll import nll_many, nll_one
from .scoring import is_correct


def _live_all(trials: list[Trial], mems: list[dict], foreigns: list[dict], own: list[tuple[str, str]],
              other: list[tuple[str, str]]) -> list[dict]:
    """One step for every session of every recipe; returns per trial recipe -> (previous engram, user, reply)."""
    lasts: list[dict] = [{} for _ in trials]
    turns = own + other
    for r, engine in trials[0].engines.items():
        sessions = [m[r] for m in mems] + [f[r] for f in foreigns]
        prevs = [s.engram for s in sessions]
        for s, turn, e in zip(sessions, turns, absorb_many(engine, prevs, turns)):
            s.turns.append(turn)
            s.engram = e
        for ti in range(len(trials)):
            lasts[ti][r] = (prevs[ti], *own[ti])
    return lasts


def _answer(t: Trial, name: str, reply: str, prompt_tokens, seconds: float, k: int, key, nll: dict) -> dict:
    if key in t._asked:  # two rows of one trial with the same prompt in this batch
        return {**t._asked[key][1], "seconds": 0.0, "same_prompt_as": t._asked[key][0]}
    a = {"reply": reply, "correct": is_correct(reply, t.fact.answer, t.fact.aliases),
         "prompt_tokens": prompt_tokens, "seconds": seconds, **nll}
    t._asked[key] = (f"k={k}/{name}", a)
    return a


def _probe_all(trials: list[Trial], k, mems, foreigns, firsts, lasts, on_ask) -> list[dict]:
    answers: list[dict] = [{} for _ in trials]
    rows = []  # (trial index, row, engram, text, key, prompt tokens)
    for ti, t in enumerate(trials):
        for row in t.rows:
            p, key = t.prompt(row, mems[ti], foreigns[ti])
            if t.reused(key, answers[ti], row.name):
                on_ask()
                continue
            engine = t.engines[t.recipe_of(row)]
            text = with_context(p.context, t.fact.question)
            ids = chat_ids(engine.tokenizer, text)
            try:
                engine.check_fits(p.engram, ids, t.s.max_new_tokens)
            except InputTooLongError as exc:  # scored as wrong, and the error is kept
                nll = nll_one(engine, p.engram, text, t.fact.answer) if t.s.nll else {}
                answers[ti][row.name] = {**_answer(t, row.name, "", None, 0.0, k, key, nll), "error": str(exc)}
                t._asked[key] = (f"k={k}/{row.name}", answers[ti][row.name])
                on_ask()
                continue
            # what the model is fed: the recipe's layout of engram and text (slots, frame, input)
            rows.append((ti, row, p.engram, text, key, len(engine.place(p.engram, text).ids)))
    # One batch per row: prompts of a row have similar lengths, so little is spent on padding
    # (a 70-token engram prompt padded to a 1,500-token transcript would cost 20x).
    for name in dict.fromkeys(r[1].name for r in rows):
        group = [r for r in rows if r[1].name == name]
        t0 = trials[0]
        engine = t0.engines[t0.recipe_of(group[0][1])]
        started = time.perf_counter()
        replies = answer_many(engine, [r[2] for r in group], [r[3] for r in group], max_new_tokens=t0.s.max_new_tokens)
        share = round((time.perf_counter() - started) / len(group), 3)  # the batch's time, split evenly
        nlls = (nll_many(engine, [r[2] for r in group], [r[3] for r in group],
                         [trials[r[0]].fact.answer for r in group]) if t0.s.nll else [{} for _ in group])
        for (ti, row, _e, _text, key, prompt_tokens), reply, nll in zip(group, replies, nlls):
            answers[ti][row.name] = _answer(trials[ti], row.name, reply, prompt_tokens, share, k, key, nll)
            on_ask()
    return [{"k": k, "answers": {r.name: answers[ti][r.name] for r in t.rows},
             "diagnostics": t.diagnostics(mems[ti], foreigns[ti], firsts[ti], lasts[ti])}
            for ti, t in enumerate(trials)]


def run_lockstep(trials: list[Trial], on_ask=lambda: None) -> list[dict]:
    """Trial.run for several trials at once; returns their records in order."""
    recipes = trials[0].recipes
    mems = [{r: Memory() for r in recipes} for _ in trials]
    foreigns = [{r: Memory() for r in recipes} for _ in trials]
    lasts = _live_all(trials, mems, foreigns, [(t.fact.statement, ACK) for t in trials],
                      [(t.foreign_fact.statement, ACK) for t in trials])
    firsts = [{r: m[r].engram for r in recipes} for m in mems]
    s = trials[0].s
    checkpoints, kmax = set(s.cycles), max(s.cycles)
    probes: list[list[dict]] = [[] for _ in trials]
    for i in range(kmax + 1):
        if i in checkpoints:
            for ti, p in enumerate(_probe_all(trials, i, mems, foreigns, firsts, lasts, on_ask)):
                probes[ti].append(p)
        if i < kmax:
            lasts = _live_all(trials, mems, foreigns, [t.distractors[i] for t in trials],
                              [t.foreign_distractors[i] for t in trials])
    return [t.record(probes[ti]) for ti, t in enumerate(trials)]
