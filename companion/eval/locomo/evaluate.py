"""Asking LoCoMo questions through every memory mode, resumably.

Every conversation is first replayed into the store (replay.py), once per
recipe under test (each recipe's own Engine; one loaded model), all recipes
and conversations side by side in shared forward passes. Then each
sampled question is asked through each mode row (modes.mode_rows:
engram:<recipe>, foreign:<recipe>, engram+retrieval:<recipe>, and the
recipe-free text modes, answered once with the first recipe's engine), and
the gold answer's teacher-forced NLL under the same prompt is recorded
(asking.py). Each answer is appended to answers.jsonl at once, so a killed run
resumes where it stopped. Questions go round-robin (question rank, then
conversation, then mode row) so a run cut short still covers every
conversation and category.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from companion.engine.cycle import chat_ids
from memory_store import open_store

from ..modes import MODE_NAMES, engines_by_recipe, format_turns, make_modes, mode_rows, with_context
from .asking import SHARED_CONTEXT_MODES, answer_group
from .data import Conversation, stratified
from .replay import replay_recipes
from .report import code_version


@dataclass
class RunSettings:
    limit: int | None = 50  # questions per conversation
    seed: int = 0
    modes: tuple[str, ...] = MODE_NAMES  # kinds: engram, foreign, engram+retrieval get a row per recipe
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
    replays: dict = field(default_factory=dict)  # recipe -> conv_id -> {"session", "turns", "new_turns", "seconds"}
    transcript_tokens: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)  # mode row -> why it was not run
    rows: list = field(default_factory=list)  # the mode rows asked (modes.mode_rows names), in report order
    code_version: str | None = None  # when the run started: the code that replayed and asked


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


def run(engines, convs: list[Conversation], out: Path, settings: RunSettings, *, store_url: str | None = None,
        progress: bool = True, header_extra: dict | None = None, ask_missing: bool = True) -> RunState:
    """Replay (once per recipe), then ask what answers.jsonl lacks. engines: an Engine, or one per recipe
    sharing one model; the first answers the recipe-free text modes. ask_missing=False asks nothing and keeps
    only the questions every mode row has answered, so a run cut short still compares rows on the same questions."""
    from tqdm import tqdm

    engines = engines_by_recipe(engines)
    recipes = list(engines)
    first = engines[recipes[0]]
    out.mkdir(parents=True, exist_ok=True)
    header = {"model": first.lm.name, "fingerprint": first.lm.fingerprint, "recipes": recipes,
              "recipe_configs": {r: e.config.to_dict() for r, e in engines.items()},
              **settings.fixed(), **(header_extra or {})}
    _check_header(out, header)
    all_modes = make_modes(context_chars=settings.context_chars, recent_turns=settings.recent_turns,
                           top_k=settings.top_k)
    try:
        rows = mode_rows(settings.modes, recipes)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    state = RunState(out, code_version=code_version(Path.cwd()))
    store = open_store(store_url or f"sqlite:///{(out / 'replays.db').resolve()}")
    memories: dict[str, dict] = {r: {} for r in recipes}  # recipe -> conv_id -> Memory
    try:
        bar = tqdm(total=len(recipes) * sum(len(c.turns()) for c in convs), desc="replay", unit="turn",
                   disable=not progress)
        replayed = replay_recipes(engines, store, convs, batched=settings.batch > 1,
                                  on_turn=lambda c, i, n: bar.update(1))
        for r, engine in engines.items():
            state.replays[r] = {}
            for rep in replayed[r]:
                memories[r][rep.conv_id] = rep.memory
                state.replays[r][rep.conv_id] = {"session": rep.session, "turns": len(rep.memory.turns),
                                                 "new_turns": rep.new_turns, "seconds": round(rep.seconds, 2)}
                if r == recipes[0]:
                    state.transcript_tokens[rep.conv_id] = full_transcript_tokens(engine.tokenizer, rep.memory.turns)
        bar.close()
    finally:
        store.close()

    if len(convs) < 2:
        for row in [r for r in rows if r.kind == "foreign"]:
            rows.remove(row)
            state.skipped[row.name] = "needs a second conversation to take a foreign engram from"
    state.rows = [r.name for r in rows]
    ids = [c.conv_id for c in convs]
    foreign = {r: {cid: memories[r][ids[(i + 1) % len(ids)]] for i, cid in enumerate(ids)} for r in recipes}
    samples = {c.conv_id: stratified(c.qa, settings.limit, settings.seed, c.conv_id) for c in convs}
    path = out / "answers.jsonl"
    state.answers = _read_answers(path)
    done = {(a["conv"], a["qa_index"], a["mode"]) for a in state.answers}
    todo = [(c, q, row) for rank in range(max(map(len, samples.values()), default=0))
            for c in convs if rank < len(samples[c.conv_id])
            for q in [samples[c.conv_id][rank]] for row in rows if (c.conv_id, q.index, row.name) not in done]
    keep = {(c.conv_id, q.index, row.name) for c in convs for q in samples[c.conv_id] for row in rows}
    state.answers = [a for a in state.answers if (a["conv"], a["qa_index"], a["mode"]) in keep]
    if not ask_missing:
        todo = []
        per_q = Counter((a["conv"], a["qa_index"]) for a in state.answers)
        state.answers = [a for a in state.answers if per_q[(a["conv"], a["qa_index"])] == len(rows)]
    size = max(1, settings.batch)
    order = {cid: i for i, cid in enumerate(ids)}
    windows = [todo[i:i + size * len(rows)] for i in range(0, len(todo), size * len(rows))]
    bar = tqdm(total=len(todo), desc="questions x modes", unit="answer", disable=not progress)
    with path.open("a", encoding="utf-8") as sink:
        for window in windows:  # a few question ranks over every conversation, batched per mode row
            for row in rows:
                items = [(c, q) for c, q, m in window if m == row]
                if row.kind in SHARED_CONTEXT_MODES:  # same context per conversation: group by conversation
                    items.sort(key=lambda cq: order[cq[0].conv_id])
                    groups = [[cq for cq in items if cq[0].conv_id == cid] for cid in order]
                else:
                    groups = [items[i:i + size] for i in range(0, len(items), size)]
                r = row.recipe or recipes[0]
                for group in (g for g in groups if g):
                    for rec in answer_group(engines[r], all_modes[row.kind], row, group, memories[r], foreign[r],
                                            settings, state.transcript_tokens):
                        sink.write(json.dumps(rec) + "\n")
                        state.answers.append(rec)
                    sink.flush()
                    bar.update(len(group))
    bar.close()
    return state
