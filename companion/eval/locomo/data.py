"""LoCoMo conversations: dated sessions, dialogue lines, QA items, and stratified question samples.

Accepts the per-conversation files of the dev folder (`conv-26.json`: a dict
with `speaker_a`, `session_N`, `session_N_date_time`, `qa`) and the original
`locomo10.json` layout (a list of `{sample_id, conversation, qa}`).

How dialogue lines become Companion turns (`Conversation.turns`):

* speaker_a is the user, speaker_b the companion: an A line followed by a B
  line in the same session is one turn (user text, reply).
* every line is written with its speaker's name ("Caroline: ..."), and a
  shared photo as "[shares a photo: caption]", as the LoCoMo paper does;
* the session's date goes in front of the session's first user text:
  "[1:56 pm on 8 May, 2023] Caroline: ...";
* a session that opens with B gets a turn whose user text is the date alone;
  an A line with no B line after it (end of session, or A speaking twice)
  becomes a turn with an empty reply. Turns never cross sessions.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
TUNE_CONVERSATIONS = ("conv-26",)  # the designated tuning conversation; never in the headline
_SESSION = re.compile(r"session_(\d+)")


@dataclass(frozen=True)
class Line:
    speaker: str
    dia_id: str
    text: str
    caption: str | None = None

    def render(self) -> str:
        photo = f" [shares a photo: {self.caption}]" if self.caption else ""
        return f"{self.speaker}: {self.text}{photo}".strip()


@dataclass(frozen=True)
class DatedSession:
    index: int
    date: str
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class QA:
    index: int  # position in the file's qa list: the stable id of a question
    question: str
    answer: str | None  # None for most adversarial items
    category: int
    evidence: tuple[str, ...] = ()
    adversarial_answer: str | None = None


@dataclass(frozen=True)
class Conversation:
    conv_id: str
    speaker_a: str
    speaker_b: str
    sessions: tuple[DatedSession, ...]
    qa: tuple[QA, ...]

    @property
    def lines(self) -> list[Line]:
        return [line for s in self.sessions for line in s.lines]

    def turns(self) -> list[tuple[str, str]]:
        """(user, reply) pairs in order, as Companion would have lived them (see module doc)."""
        out: list[tuple[str, str]] = []
        for s in self.sessions:
            stamp, pending = f"[{s.date}]", None
            first = True

            def user_text(text: str) -> str:
                nonlocal first
                text = f"{stamp} {text}".strip() if first else text
                first = False
                return text

            for line in s.lines:
                if line.speaker == self.speaker_a:
                    if pending is not None:
                        out.append((pending, ""))
                    pending = user_text(line.render())
                else:
                    out.append((pending if pending is not None else user_text(""), line.render()))
                    pending = None
            if pending is not None:
                out.append((pending, ""))
        return out


def _qa(items: list[dict]) -> tuple[QA, ...]:
    out = []
    for i, q in enumerate(items):
        answer = q.get("answer")
        out.append(QA(i, str(q["question"]), None if answer is None else str(answer), int(q["category"]),
                      tuple(q.get("evidence") or ()), q.get("adversarial_answer")))
    return tuple(out)


def parse(raw: dict, conv_id: str) -> Conversation:
    conv = raw.get("conversation", raw)
    nums = sorted(int(m.group(1)) for k in conv if (m := _SESSION.fullmatch(k)))
    sessions = []
    for n in nums:
        lines = tuple(Line(str(t["speaker"]), str(t["dia_id"]), str(t.get("text", "")), t.get("blip_caption"))
                      for t in conv[f"session_{n}"])
        if lines:
            sessions.append(DatedSession(n, str(conv.get(f"session_{n}_date_time", "")), lines))
    if not sessions:
        raise ValueError(f"{conv_id}: no session_N dialogue found")
    return Conversation(str(raw.get("sample_id", conv_id)), str(conv["speaker_a"]), str(conv["speaker_b"]),
                        tuple(sessions), _qa(raw.get("qa", [])))


def load(path: str | Path) -> list[Conversation]:
    """One LoCoMo JSON file (a conversation or a list of them) or a folder of them, sorted by id."""
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no LoCoMo .json files in {path}")
    convs = []
    for f in files:
        raw = json.loads(f.read_text(encoding="utf-8"))
        items = raw if isinstance(raw, list) else [raw]
        for i, item in enumerate(items):
            convs.append(parse(item, item.get("sample_id", f.stem if len(items) == 1 else f"{f.stem}-{i}")))
    return sorted(convs, key=lambda c: _sort_key(c.conv_id))


def _sort_key(conv_id: str):
    m = re.search(r"(\d+)$", conv_id)
    return (int(m.group(1)) if m else 10**9, conv_id)


def default_data_dir(repo_root: Path | None = None) -> Path:
    """COMPANION_LOCOMO, else ../shared/data/locomo-dev beside the repository."""
    env = os.environ.get("COMPANION_LOCOMO")
    if env:
        return Path(env).expanduser()
    root = repo_root or Path(__file__).resolve().parents[3]
    return root.parent / "shared" / "data" / "locomo-dev"


def split_of(conv_id: str) -> str:
    return "tune" if conv_id in TUNE_CONVERSATIONS else "report"


def stratified(qa: tuple[QA, ...] | list[QA], limit: int | None, seed: int, salt: str = "") -> list[QA]:
    """Up to `limit` questions, balanced across categories, deterministic in (seed, salt).

    Categories take turns (1, 2, 3, 4, 5, 1, ...), each drawing from its own
    shuffled pool until empty, so every prefix of the result is itself
    balanced and a short category's share passes to the others.
    """
    rng = random.Random(f"{seed}:{salt}")
    pools = {}
    for cat in sorted({q.category for q in qa}):
        pool = [q for q in qa if q.category == cat]
        rng.shuffle(pool)
        pools[cat] = pool
    limit = len(qa) if limit is None else limit
    out: list[QA] = []
    while len(out) < limit and any(pools.values()):
        for cat in sorted(pools):
            if pools[cat] and len(out) < limit:
                out.append(pools[cat].pop())
    return out
