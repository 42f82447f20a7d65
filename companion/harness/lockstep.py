"""Many degradation trials lived side by side: the harness's throughput path.

The trials' sessions (each trial's own and its foreign twin) take their turns
together, one `absorb_many` pass per step, and the questions of every trial
for a mode are answered with one `answer_many` call. The records equal what
`Trial.run` gives one trial at a time (the batched primitives are tested equal
to the one-at-a-time ones).
"""

from __future__ import annotations

import time

from ..batch import absorb_many, answer_many
from ..cycle import InputTooLongError, chat_ids, end_id
from ..modes import Memory, with_context
from .degradation import ACK, Trial, _tensor_key
from .scoring import is_correct


def _live_all(trials: list[Trial], mems: list[Memory], turns: list[tuple[str, str]]) -> list[tuple]:
    """One step for every session; returns each session's (previous engram, turn ids) for diagnostics."""
    engine = trials[0].engine
    prevs = [m.engram for m in mems]
    new = absorb_many(engine, prevs, turns)
    tok = engine.tokenizer
    lasts = []
    for m, prev, (user, reply), e in zip(mems, prevs, turns, new):
        m.turns.append((user, reply))
        m.engram = e
        lasts.append((prev, chat_ids(tok, user, reply) + [end_id(tok)]))
    return lasts


def _probe_all(trials, k, mems, foreigns, firsts, lasts, on_ask) -> list[dict]:
    engine = trials[0].engine
    answers: list[dict] = [{} for _ in trials]
    rows = []  # (trial index, mode, engram, text, key)
    for ti, t in enumerate(trials):
        for name in t.s.modes:
            p = t.modes[name].prompt(mems[ti], t.fact.question, foreigns[ti])
            key = (_tensor_key(p.engram), p.context)
            if key in t._asked:
                where, first_answer = t._asked[key]
                answers[ti][name] = {**first_answer, "seconds": 0.0, "same_prompt_as": where}
                on_ask()
                continue
            text = with_context(p.context, t.fact.question)
            ids = chat_ids(engine.tokenizer, text)
            try:
                engine.check_fits(p.engram, ids, t.s.max_new_tokens)
            except InputTooLongError as exc:  # scored as wrong, and the error is kept
                answers[ti][name] = {"reply": "", "correct": False, "prompt_tokens": None, "seconds": 0.0,
                                     "error": str(exc)}
                t._asked[key] = (f"k={k}/{name}", answers[ti][name])
                on_ask()
                continue
            slots = 0 if p.engram is None else p.engram.shape[0]
            rows.append((ti, name, p.engram, text, key, slots + len(ids)))
    # One batch per mode: rows of a mode have similar lengths, so little is spent on padding
    # (a 70-token engram prompt padded to a 1,500-token transcript would cost 20x).
    for mode in dict.fromkeys(r[1] for r in rows):
        group = [r for r in rows if r[1] == mode]
        t0 = time.perf_counter()
        replies = answer_many(engine, [r[2] for r in group], [r[3] for r in group],
                              max_new_tokens=trials[0].s.max_new_tokens)
        share = round((time.perf_counter() - t0) / len(group), 3)  # the batch's time, split evenly
        for (ti, name, _e, _text, key, prompt_tokens), reply in zip(group, replies):
            t = trials[ti]
            if key in t._asked:  # two modes of one trial with the same prompt in this batch
                answers[ti][name] = {**t._asked[key][1], "seconds": 0.0, "same_prompt_as": t._asked[key][0]}
            else:
                answers[ti][name] = {"reply": reply, "correct": is_correct(reply, t.fact.answer, t.fact.aliases),
                                     "prompt_tokens": prompt_tokens, "seconds": share}
                t._asked[key] = (f"k={k}/{name}", answers[ti][name])
            on_ask()
    return [{"k": k, "answers": {n: answers[ti][n] for n in t.s.modes},
             "diagnostics": t.diagnostics(mems[ti], foreigns[ti], firsts[ti], lasts[ti])}
            for ti, t in enumerate(trials)]


def run_lockstep(trials: list[Trial], on_ask=lambda: None) -> list[dict]:
    """Trial.run for several trials at once; returns their records in order."""
    n = len(trials)
    mems, foreigns = [Memory() for _ in trials], [Memory() for _ in trials]
    lived = _live_all(trials, mems + foreigns, [(t.fact.statement, ACK) for t in trials] +
                      [(t.foreign_fact.statement, ACK) for t in trials])
    lasts = lived[:n]
    firsts = [m.engram for m in mems]
    s = trials[0].s
    checkpoints, kmax = set(s.cycles), max(s.cycles)
    probes: list[list[dict]] = [[] for _ in trials]
    for i in range(kmax + 1):
        if i in checkpoints:
            for ti, p in enumerate(_probe_all(trials, i, mems, foreigns, firsts, lasts, on_ask)):
                probes[ti].append(p)
        if i < kmax:
            lived = _live_all(trials, mems + foreigns, [t.distractors[i] for t in trials] +
                              [t.foreign_distractors[i] for t in trials])
            lasts = lived[:n]
    return [{"trial": t.index, "fact": t.fact.to_dict(), "foreign_fact": t.foreign_fact.to_dict(),
             "context_chars": t.context_chars, "probes": probes[ti]} for ti, t in enumerate(trials)]
