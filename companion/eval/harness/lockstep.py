"""Many degradation trials lived side by side: the harness's throughput path.

Every session of every trial and recipe (each trial's own, and the foreign
twins that are not another trial of the group) takes its turn in one
`absorb.absorb_rows` call per step. At a checkpoint each trial's memories are
noted (a Memory holds a tensor and a list: a copy costs nothing), and once the
last turn is lived every row of every trial and checkpoint still to be asked
goes to one `batch.answer_rows` call, which also scores the correct answer's
NLL from each prompt's KV cache. Rows of different recipes, modes and
checkpoints share forward passes there, grouped by length: on a CPU a decode
step for 60 rows costs about 2.5 times one for 6 (reading the weights
dominates), so the more rows a pass has, the fewer times each step is paid
for. The records equal what `Trial.run` gives one trial at a time (the
batched primitives are tested equal to the one-at-a-time ones).
"""

from __future__ import annotations

from companion.batched.absorb import absorb_rows
from companion.batched.batch import answer_rows
from companion.engine.cycle import InputTooLongError, chat_ids

from ..modes import Memory, with_context
from .nll import nll_one, nll_record, scored_target
from .scoring import is_correct
from .summary import first_position_share
from .held import FactSlots
from .trial import ACK, Trial


def _live_all(trials: list[Trial], sessions: list[tuple[dict, tuple[str, str], int | None]]) -> list[dict]:
    """One step for every (recipe -> Memory, turn, index of the trial it is the own session of, or None)
    and every recipe; returns per trial recipe -> the position-0 shares of its own session's turn, taken
    from this pass's states (Trial.diagnostics would run it again)."""
    jobs = [(r, engine, mem[r], turn, ti) for r, engine in trials[0].engines.items()
            for mem, turn, ti in sessions]
    got = absorb_rows([j[1] for j in jobs], [j[2].engram for j in jobs], [j[3] for j in jobs])
    shares: list[dict] = [{} for _ in trials]
    for (r, engine, session, turn, ti), (engram, states) in zip(jobs, got):
        session.turns.append(turn)
        session.engram = engram
        if ti is not None:
            shares[ti][r] = first_position_share(states, engine.config.slots)
    return shares


def _snapshot(mems: dict) -> dict:
    """recipe -> a copy of its Memory as it is now (later turns replace the engram and extend the log)."""
    return {r: Memory(turns=list(m.turns), engram=m.engram) for r, m in mems.items()}


def _probe_all(trials: list[Trial], checkpoints: list[tuple], on_ask) -> list[list[dict]]:
    """Every row of every trial at every checkpoint (k, own memories, foreign memories, diagnostics per
    trial) answered in one answer_rows call; returns per trial its probes in checkpoint order."""
    asked = []  # (trial index, k, row, key, engine, engram, text, target, refused NLL record)
    answers: list[dict] = [{} for _ in trials]  # per trial: (k, row name) -> answer
    first_asker: list[dict] = [{} for _ in trials]  # prompt key -> first (k, row) asking it in this call
    for k, mems, foreigns, _diags in checkpoints:
        for ti, t in enumerate(trials):
            for row in t.rows:
                p, key = t.prompt(row, mems[ti], foreigns[ti])
                if key in t._asked or key in first_asker[ti]:  # filled in below, once the first is answered
                    continue
                engine = t.engines[t.recipe_of(row)]
                text = with_context(p.context, t.fact.question)
                try:
                    engine.check_fits(p.engram, chat_ids(engine.tokenizer, text), t.s.max_new_tokens)
                except InputTooLongError as exc:  # scored as wrong, and the error is kept
                    nll = nll_one(engine, p.engram, text, t.fact.answer) if t.s.nll else {}
                    _keep(t, answers[ti], (k, row.name), key, "", None, 0.0, nll, error=str(exc))
                    continue
                target, refused = scored_target(engine, p.engram, text, t.fact.answer) if t.s.nll else (None, {})
                first_asker[ti][key] = (k, row.name)
                asked.append((ti, k, row, key, engine, p.engram, text, target, refused))
    got = answer_rows([a[4] for a in asked], [a[5] for a in asked], [a[6] for a in asked],
                      max_new_tokens=trials[0].s.max_new_tokens, targets=[a[7] for a in asked])
    for (ti, k, row, key, _e, _g, _t, target, refused), a in zip(asked, got):
        nll = nll_record(*a.target_nll) if target else refused
        _keep(trials[ti], answers[ti], (k, row.name), key, a.reply, a.prompt_tokens, a.seconds, nll)
    out: list[list[dict]] = [[] for _ in trials]
    for k, mems, foreigns, diags in checkpoints:
        for ti, t in enumerate(trials):
            for row in t.rows:  # rows whose prompt an earlier row (or checkpoint) asked: its answer again
                if (k, row.name) not in answers[ti]:
                    got_row: dict = {}
                    t.reused(t.prompt(row, mems[ti], foreigns[ti])[1], got_row, row.name)
                    answers[ti][(k, row.name)] = got_row[row.name]
                on_ask()
            out[ti].append({"k": k, "answers": {r.name: answers[ti][(k, r.name)] for r in t.rows},
                            "diagnostics": diags[ti]})
    return out


def _keep(t: Trial, answers: dict, at: tuple, key, reply: str, prompt_tokens, seconds: float, nll: dict,
          error: str | None = None) -> None:
    a = {"reply": reply, "correct": is_correct(reply, t.fact.answer, t.fact.aliases),
         "prompt_tokens": prompt_tokens, "seconds": seconds, **nll}
    if error:
        a["error"] = error
    answers[at] = a
    t._asked[key] = (f"k={at[0]}/{at[1]}", a)


def run_lockstep(trials: list[Trial], on_ask=lambda: None) -> list[dict]:
    """Trial.run for several trials at once; returns their records in order.

    A trial's foreign session is another trial's own (Trial.foreign_index): when that trial is in
    the group its Memory is shared, not lived twice; the others are lived as extra sessions."""
    recipes = trials[0].recipes
    mems = [{r: Memory() for r in recipes} for _ in trials]
    at = {t.index: ti for ti, t in enumerate(trials)}
    extra = [ti for ti, t in enumerate(trials) if t.foreign_index not in at]
    foreigns = [mems[at[t.foreign_index]] if t.foreign_index in at else {r: Memory() for r in recipes}
                for t in trials]

    def step(own, foreign) -> list[dict]:
        return _live_all(trials, [(m, turn, ti) for ti, (m, turn) in enumerate(zip(mems, own))]
                         + [(foreigns[ti], foreign[ti], None) for ti in extra])

    for i in range(trials[0].s.warmup):
        step([t.warmup[i] for t in trials], [t.foreign_warmup[i] for t in trials])
    befores = [{r: m[r].engram for r in recipes} for m in mems]
    shares = step([(t.fact.statement, ACK) for t in trials], [(t.foreign_fact.statement, ACK) for t in trials])
    firsts = [{r: m[r].engram for r in recipes} for m in mems]
    helds = [FactSlots(t.engines, befores[ti], firsts[ti], (t.fact.statement, ACK)) for ti, t in enumerate(trials)]
    s = trials[0].s
    checkpoints, kmax = set(s.cycles), max(s.cycles)
    asks = []  # what each checkpoint asks with; all asked together at the end (bigger, fewer passes)
    for i in range(kmax + 1):
        if i in checkpoints:
            diags = [t.diagnostics(mems[ti], foreigns[ti], firsts[ti], shares=shares[ti], held=helds[ti])
                     for ti, t in enumerate(trials)]
            asks.append((i, [_snapshot(m) for m in mems], [_snapshot(f) for f in foreigns], diags))
        if i < kmax:
            shares = step([t.distractors[i] for t in trials], [t.foreign_distractors[i] for t in trials])
            for ti in range(len(trials)):
                helds[ti].step(i + 1, {r: mems[ti][r].engram for r in recipes})
    probes = _probe_all(trials, asks, on_ask)
    return [t.record(probes[ti], helds[ti]) for ti, t in enumerate(trials)]
