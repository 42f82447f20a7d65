"""Asking LoCoMo questions through every memory mode, resumably.

Every conversation is first replayed into the store (replay.py). Then each
sampled question is asked through each mode: the mode builds the prompt
(engram and context) exactly as modes.ask does, and batch.answer_many answers
a batch of such prompts greedily in one forward (equal to modes.ask per row to
float tolerance; RunSettings.batch=1 calls modes.ask itself). Each answer is
appended to answers.jsonl at once, so a killed run resumes where it stopped. Questions go round-robin (question rank, then conversation,
then mode) so a run cut short still covers every conversation and category.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from memory_store import open_store

from ..cycle import chat_ids
from ..modes import MODE_NAMES, ask, format_turns, make_modes, with_context
from .data import Conversation, split_of, stratified
from .f1 import declines, locomo_f1
from .prefix import answer_shared
from .replay import replay_many

SHARED_CONTEXT_MODES = ("transcript", "recent")  # context independent of the question


@dataclass
class RunSettings:
    limit: int | None = 50  # questions per conversation
    seed: int = 0
    modes: tuple[str, ...] = MODE_NAMES
    max_new_tokens: int = 24
    context_chars: int = 6000  # bound on text modes (transcript, recent, retrieval)
    top_k: int = 3
    recent_turns: int = 3
    batch: int = 10  # questions per forward (batch.answer_many); 1: modes.ask one at a time

    def fixed(self) -> dict:
        """What must not change between a run and its resumption (modes and limit may grow)."""
        d = asdict(self)
        d.pop("limit"), d.pop("modes"), d.pop("batch")
        return d


@dataclass
class RunState:
    out: Path
    answers: list[dict] = field(default_factory=list)
    replays: dict = field(default_factory=dict)  # conv_id -> {"session", "turns", "new_turns", "seconds"}
    transcript_tokens: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)  # mode -> why it was not run


def _read_answers(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill: that answer is asked again
                pass
    return out


def _check_header(out: Path, header: dict) -> None:
    path = out / "run.json"
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = [k for k in header if old.get(k) != header[k]]
        if diff:
            raise SystemExit(f"{out} holds a run with different {', '.join(diff)}; use another --out to start afresh")
    else:
        path.write_text(json.dumps(header, indent=2, sort_keys=True), encoding="utf-8")


def full_transcript_tokens(tokenizer, conv_turns: list[tuple[str, str]]) -> int:
    """Prompt tokens of a question with the whole conversation written in front of it."""
    return len(chat_ids(tokenizer, with_context(format_turns(conv_turns), "?")))


def run(engine, convs: list[Conversation], out: Path, settings: RunSettings, *, store_url: str | None = None,
        progress: bool = True, header_extra: dict | None = None, ask_missing: bool = True) -> RunState:
    """Replay, then ask what answers.jsonl lacks. ask_missing=False asks nothing and keeps only the
    questions every mode has answered, so a run cut short still compares modes on the same questions."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    header = {"model": engine.lm.name, "fingerprint": engine.lm.fingerprint, "recipe": engine.config.to_dict(),
              **settings.fixed(), **(header_extra or {})}
    _check_header(out, header)
    all_modes = make_modes(context_chars=settings.context_chars, recent_turns=settings.recent_turns,
                           top_k=settings.top_k)
    unknown = [m for m in settings.modes if m not in all_modes]
    if unknown:
        raise SystemExit(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(all_modes)}")
    state = RunState(out)
    store = open_store(store_url or f"sqlite:///{(out / 'replays.db').resolve()}")
    memories = {}
    try:
        bar = tqdm(total=sum(len(c.turns()) for c in convs), desc="replay", unit="turn", disable=not progress)
        for r in replay_many(engine, store, convs, batched=settings.batch > 1,
                             on_turn=lambda c, i, n: bar.update(1)):
            memories[r.conv_id] = r.memory
            state.replays[r.conv_id] = {"session": r.session, "turns": len(r.memory.turns),
                                        "new_turns": r.new_turns, "seconds": round(r.seconds, 2)}
            state.transcript_tokens[r.conv_id] = full_transcript_tokens(engine.tokenizer, r.memory.turns)
        bar.close()
    finally:
        store.close()

    modes = list(settings.modes)
    if "foreign-engram" in modes and len(convs) < 2:
        modes.remove("foreign-engram")
        state.skipped["foreign-engram"] = "needs a second conversation to take a foreign engram from"
    ids = [c.conv_id for c in convs]
    foreign = {cid: memories[ids[(i + 1) % len(ids)]] for i, cid in enumerate(ids)}
    samples = {c.conv_id: stratified(c.qa, settings.limit, settings.seed, c.conv_id) for c in convs}
    path = out / "answers.jsonl"
    state.answers = _read_answers(path)
    done = {(a["conv"], a["qa_index"], a["mode"]) for a in state.answers}
    todo = [(c, q, m) for rank in range(max(map(len, samples.values()), default=0))
            for c in convs if rank < len(samples[c.conv_id])
            for q in [samples[c.conv_id][rank]] for m in modes if (c.conv_id, q.index, m) not in done]
    keep = {(c.conv_id, q.index, m) for c in convs for q in samples[c.conv_id] for m in modes}
    state.answers = [a for a in state.answers if (a["conv"], a["qa_index"], a["mode"]) in keep]
    if not ask_missing:
        todo = []
        per_q = Counter((a["conv"], a["qa_index"]) for a in state.answers)
        state.answers = [a for a in state.answers if per_q[(a["conv"], a["qa_index"])] == len(modes)]
    size = max(1, settings.batch)
    order = {cid: i for i, cid in enumerate(ids)}
    windows = [todo[i:i + size * len(modes)] for i in range(0, len(todo), size * len(modes))]
    bar = tqdm(total=len(todo), desc="questions x modes", unit="answer", disable=not progress)
    with path.open("a", encoding="utf-8") as sink:
        for window in windows:  # a few question ranks over every conversation, batched per mode
            for mode in modes:
                items = [(c, q) for c, q, m in window if m == mode]
                if mode in SHARED_CONTEXT_MODES:  # same context per conversation: group by conversation
                    items.sort(key=lambda cq: order[cq[0].conv_id])
                    groups = [[cq for cq in items if cq[0].conv_id == cid] for cid in order]
                else:
                    groups = [items[i:i + size] for i in range(0, len(items), size)]
                for group in (g for g in groups if g):
                    for rec in _answer(engine, all_modes[mode], group, memories, foreign, settings,
                                       state.transcript_tokens):
                        sink.write(json.dumps(rec) + "\n")
                        state.answers.append(rec)
                    sink.flush()
                    bar.update(len(group))
    bar.close()
    return state


def _answer(engine, mode, items, memories, foreign, settings: RunSettings, full_tokens: dict) -> list[dict]:
    """Ask a batch of (conversation, question) through one mode: batch.answer_many, or modes.ask one
    at a time when settings.batch is 1. Seconds are the batch's wall time shared equally."""
    from ..batch import answer_many

    t0 = time.perf_counter()
    prompts = [mode.prompt(memories[c.conv_id], q.question, foreign[c.conv_id]) for c, q in items]
    shared = (settings.batch > 1 and len({c.conv_id for c, _ in items}) == 1 and prompts[0].context
              and all(p.context == prompts[0].context and p.engram is prompts[0].engram for p in prompts))
    if shared:  # one conversation, one context for every question: compute the prefix once
        texts = [with_context(p.context, q.question) for p, (c, q) in zip(prompts, items)]
        replies = answer_shared(engine, prompts[0].engram, texts, max_new_tokens=settings.max_new_tokens)
        tokens = [(0 if p.engram is None else p.engram.shape[0]) + len(chat_ids(engine.tokenizer, t))
                  for p, t in zip(prompts, texts)]
    elif settings.batch > 1:
        prompts = [mode.prompt(memories[c.conv_id], q.question, foreign[c.conv_id]) for c, q in items]
        texts = [with_context(p.context, q.question) for p, (c, q) in zip(prompts, items)]
        replies = answer_many(engine, [p.engram for p in prompts], texts, max_new_tokens=settings.max_new_tokens)
        tokens = [(0 if p.engram is None else p.engram.shape[0]) + len(chat_ids(engine.tokenizer, t))
                  for p, t in zip(prompts, texts)]
    else:
        results = [ask(engine, mode, memories[c.conv_id], q.question, foreign=foreign[c.conv_id],
                       max_new_tokens=settings.max_new_tokens) for c, q in items]
        replies, tokens = [r.reply for r in results], [r.prompt_tokens for r in results]
    seconds = (time.perf_counter() - t0) / len(items)
    out = []
    for (conv, qa), reply, n in zip(items, replies, tokens):
        full = full_tokens[conv.conv_id]
        out.append({"conv": conv.conv_id, "split": split_of(conv.conv_id), "qa_index": qa.index,
                    "category": qa.category, "question": qa.question, "answer": qa.answer,
                    "adversarial_answer": qa.adversarial_answer, "mode": mode.name, "reply": reply,
                    "f1": None if qa.category == 5 else round(locomo_f1(reply, qa.answer or "", qa.category), 4),
                    "declined": declines(reply), "prompt_tokens": n, "seconds": round(seconds, 3),
                    "transcript_tokens": full, "token_ratio": round(n / full, 5)})
    return out
