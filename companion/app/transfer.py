"""Export and import of one session as one safetensors file.

The file holds a tensor "engram.<cycle>" for every turn and, in the
safetensors header's string metadata, JSON for everything else::

    format          "companion-session"
    format_version  "1"
    session         {"name", "model_name", "model_fingerprint", "recipe", "created", "cycle",
                     "recall", "system": [{"from_turn", "text"}, ...],
                     "forgets": [{"cycle", "asked", "removed", "slots_before", "slots_after", "created"}, ...]}
                    (the last three optional on import)
    transcript      [{"index", "user", "reply", "prompt_tokens", "reply_tokens",
                      "transcript_tokens", "gen_seconds", "update_seconds", "created"}, ...]
    engrams         {"<cycle>": {"sha256", "shape", "dtype", "sources"}, ...}   sha256 of the raw tensor
                    bytes; sources: each slot's origin as engrams.sources holds it (optional; unreadable
                    sources import as unknown, as the store shows them)
    damaged         {"<cycle>": "reason", ...}   engrams that failed verification at export

safetensors, never pickle: reading a file someone sent you cannot run code.
Export writes what is readable: a damaged engram row is left out of the
tensors and named in "damaged" (and on stderr), so the transcript and every
good engram still get out. Import verifies everything and refuses a file with
a missing or damaged engram, because resuming needs an engram for each turn.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from companion.engine.config import ConfigError, EngramConfig
from companion.engine.recipes import get_recipe
from companion.engine.sources import parse_sources
from memory_store import crud, edits
from memory_store.errors import CorruptEngramError, SessionNameError
from memory_store.settings import set_system_prompt, system_prompts

from .recall import MAX_RECALL

FORMAT = "companion-session"
FORMAT_VERSION = "1"
MAX_IMPORT_BYTES = 1 << 30  # a session is a few MB; refuse to parse anything absurd


class TransferError(Exception):
    """An export or import that cannot be done; the message is one line and says why."""


@dataclass(frozen=True)
class ExportReport:
    path: Path
    name: str
    turns: int
    engrams: int
    damaged: dict[int, str]


@dataclass(frozen=True)
class ImportReport:
    name: str
    turns: int
    replaced: bool


def tensor_sha256(t: torch.Tensor) -> str:
    """sha256 of the tensor's raw bytes (layout-independent of any file format)."""
    t = t.detach().contiguous().cpu()
    return hashlib.sha256(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"").hexdigest()


def _when(text) -> datetime | None:
    """An exported time back (None: absent or unreadable, and the import's own time is used)."""
    try:
        return datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _iso(dt: datetime) -> str:
    return dt.isoformat()


def export_session(store, name: str, path: str | os.PathLike, *, force: bool = False) -> ExportReport:
    """Write session `name` to path (0600, atomically). Damaged engrams are left out and reported."""
    name = crud.validate_session_name(name)
    path = Path(path).expanduser()
    if path.exists() and not force:
        raise TransferError(f"{path} already exists; pass --force to overwrite it")
    if path.is_dir():
        raise TransferError(f"{path} is a folder; give a file name")
    with store.session() as db:
        chat = crud.get_session(db, name=name)
        if chat is None:
            raise TransferError(f"no session named {name!r}; `companion sessions` lists them")
        tensors: dict[str, torch.Tensor] = {}
        engrams: dict[str, dict] = {}
        damaged: dict[int, str] = {}
        rows = {r.cycle: r for r in crud.engram_rows(db, chat=chat)}
        transcript = []
        for t in crud.turns(db, chat=chat):
            transcript.append({
                "index": t.index, "user": t.user_text, "reply": t.reply_text,
                "prompt_tokens": t.prompt_tokens, "reply_tokens": t.reply_tokens,
                "transcript_tokens": t.transcript_tokens, "gen_seconds": t.gen_seconds,
                "update_seconds": t.update_seconds, "created": _iso(t.created_at),
            })
            row = rows.get(t.index)
            if row is None:
                damaged[t.index] = "missing"
                continue
            try:
                tensor = crud.load_engram(row, where=f"session {name!r} cycle {t.index}")
            except CorruptEngramError as exc:
                damaged[t.index] = str(exc)
                continue
            tensors[f"engram.{t.index}"] = tensor.contiguous()
            engrams[str(t.index)] = {"sha256": tensor_sha256(tensor), "shape": list(tensor.shape),
                                     "dtype": str(tensor.dtype).removeprefix("torch."), "sources": row.sources}
        session = {"name": chat.name, "model_name": chat.model_name, "model_fingerprint": chat.model_fingerprint,
                   "recipe": json.loads(chat.engram_config), "created": _iso(chat.created_at),
                   "cycle": chat.cycle, "recall": chat.recall,
                   "system": [{"from_turn": p.from_turn, "text": p.text} for p in system_prompts(db, chat=chat)],
                   "forgets": [{"cycle": f.cycle, "asked": f.asked, "removed": json.loads(f.removed),
                                "slots_before": f.slots_before, "slots_after": f.slots_after,
                                "created": _iso(f.created_at)} for f in edits.forgets(db, chat=chat)]}
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "session": json.dumps(session),
        "transcript": json.dumps(transcript),
        "engrams": json.dumps(engrams),
        "damaged": json.dumps({str(k): v for k, v in damaged.items()}),
    }
    data = save(tensors, metadata=metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Private conversation: written 0600 to a temporary name, then renamed, so
    # a crash never leaves a half file under the real name.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return ExportReport(path, name, len(transcript), len(tensors), damaged)


@dataclass
class _Parsed:
    session: dict
    recipe: EngramConfig
    transcript: list[dict]
    tensors: dict[int, torch.Tensor]
    sources: dict[int, str | None]


def _read(path: Path) -> _Parsed:
    """Parse and verify an export file completely; raises TransferError naming what is wrong."""
    if not path.is_file():
        raise TransferError(f"no file at {path}")
    if path.stat().st_size > MAX_IMPORT_BYTES:
        raise TransferError(f"{path} is {path.stat().st_size} bytes, too large to be a Companion export")

    def bad(reason: str) -> TransferError:
        return TransferError(f"{path.name} is not a valid Companion export: {reason}; nothing was imported")

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = list(f.keys())
            raw = {k: f.get_tensor(k) for k in keys}
    except TransferError:
        raise
    except Exception as exc:  # safetensors' own error types: header or data unreadable
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise bad(f"not a readable safetensors file ({first})") from exc
    if meta.get("format") != FORMAT:
        raise bad(f"format is {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise bad(f"format version {meta.get('format_version')!r} is not one this Companion reads "
                  f"({FORMAT_VERSION}); upgrade Companion")

    def loads(key: str, kind: type):
        try:
            value = json.loads(meta[key])
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise bad(f"metadata {key!r} is missing or not JSON") from exc
        if not isinstance(value, kind):
            raise bad(f"metadata {key!r} is not a JSON {kind.__name__}")
        return value

    session, transcript = loads("session", dict), loads("transcript", list)
    declared, damaged = loads("engrams", dict), loads("damaged", dict)
    if damaged:
        listed = "; ".join(f"cycle {k}: {v}" for k, v in sorted(damaged.items(), key=lambda kv: int(kv[0])))
        raise bad(f"it lacks engrams that were damaged at export ({listed}); its transcript is readable "
                  f"in the file's metadata, but a session cannot resume without its engrams")
    for key in ("name", "model_name", "model_fingerprint"):
        if not isinstance(session.get(key), str) or not session[key]:
            raise bad(f"session field {key!r} is missing")
    if not re.fullmatch(r"[0-9a-f]{64}", session["model_fingerprint"]):
        raise bad("session field 'model_fingerprint' is not a sha256 hex digest")
    try:
        recipe = EngramConfig.from_dict(session.get("recipe"))
    except (ConfigError, TypeError, AttributeError) as exc:
        raise bad(f"recipe does not parse ({exc})") from exc

    fields = {"index": int, "user": str, "reply": str, "prompt_tokens": int, "reply_tokens": int,
              "transcript_tokens": int, "gen_seconds": (int, float), "update_seconds": (int, float)}
    for pos, turn in enumerate(transcript, start=1):
        if not isinstance(turn, dict):
            raise bad(f"transcript entry {pos} is not an object")
        for key, kind in fields.items():
            if not isinstance(turn.get(key), kind) or isinstance(turn.get(key), bool):
                raise bad(f"transcript turn {pos} field {key!r} is missing or of the wrong type")
        if turn["index"] != pos:
            raise bad(f"transcript turns are not numbered 1..{len(transcript)} (turn {pos} says {turn['index']})")
        if "\x00" in turn["user"] or "\x00" in turn["reply"]:
            raise bad(f"transcript turn {pos} contains a NUL byte")
    if session.get("cycle", len(transcript)) != len(transcript):
        raise bad(f"session says {session.get('cycle')} turns but the transcript has {len(transcript)}")
    # Files exported before --recall and --system lack these: such a session recalls nothing, has no prompt.
    recall = session.setdefault("recall", 0)
    if not isinstance(recall, int) or isinstance(recall, bool) or not 0 <= recall <= MAX_RECALL:
        raise bad(f"session field 'recall' is not a whole number from 0 to {MAX_RECALL}")
    prompts = session.setdefault("system", [])
    if not isinstance(prompts, list) or not all(
            isinstance(p, dict) and isinstance(p.get("from_turn"), int) and not isinstance(p["from_turn"], bool)
            and 1 <= p["from_turn"] <= len(transcript) + 1 and isinstance(p.get("text"), str)
            and "\x00" not in p["text"] for p in prompts):
        raise bad("session field 'system' is not a list of {from_turn, text} within the transcript")

    expected = {f"engram.{i}" for i in range(1, len(transcript) + 1)}
    if set(raw) != expected or set(declared) != {k.split(".", 1)[1] for k in expected}:
        missing = sorted(expected - set(raw), key=lambda k: int(k.split(".")[1]))
        extra = sorted(set(raw) - expected)
        raise bad(f"engram tensors do not match the transcript (missing {missing or 'none'}, "
                  f"unexpected {extra or 'none'})")
    tensors: dict[int, torch.Tensor] = {}
    sources: dict[int, str | None] = {}
    first_shape = None
    for i in range(1, len(transcript) + 1):
        t, info = raw[f"engram.{i}"], declared[str(i)]
        if not isinstance(info, dict):
            raise bad(f"engram {i}: declaration is not an object")
        if tensor_sha256(t) != info.get("sha256"):
            raise bad(f"engram {i}: checksum mismatch")
        if list(t.shape) != info.get("shape") or str(t.dtype).removeprefix("torch.") != info.get("dtype"):
            raise bad(f"engram {i}: shape/dtype {tuple(t.shape)} {t.dtype} differ from the declared ones")
        # A selecting recipe's engram holds fewer rows while its first turns fill it.
        if t.dtype != torch.float32 or t.dim() != 2 or not get_recipe(recipe.recipe).rows_ok(t.shape[0], recipe.slots):
            raise bad(f"engram {i}: expected a float32 [{recipe.slots}, hidden] tensor (for recipe "
                      f"{recipe.recipe!r}), got {t.dtype} {tuple(t.shape)}")
        if first_shape is not None and t.shape[1] != first_shape[1]:
            raise bad(f"engram {i}: width {t.shape[1]} differs from engram 1's {first_shape[1]}")
        first_shape = first_shape or tuple(t.shape)
        if not bool(torch.isfinite(t).all()):
            raise bad(f"engram {i}: non-finite values (NaN or Inf)")
        tensors[i] = t
        src = info.get("sources")
        sources[i] = src if isinstance(src, str) and parse_sources(src, t.shape[0]) is not None else None
    forgets = session.setdefault("forgets", [])
    if not isinstance(forgets, list) or not all(_forget_ok(f, len(transcript)) for f in forgets):
        raise bad("session field 'forgets' is not a list of {cycle, asked, removed, slots_before, slots_after}")
    return _Parsed(session, recipe, transcript, tensors, sources)


def _forget_ok(f, turns: int) -> bool:
    def whole(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0
    return (isinstance(f, dict) and whole(f.get("cycle")) and 1 <= f["cycle"] <= turns
            and isinstance(f.get("asked"), str) and isinstance(f.get("removed"), list)
            and whole(f.get("slots_before")) and whole(f.get("slots_after")))


def import_session(store, path: str | os.PathLike, *, name: str | None = None,
                   force: bool = False) -> ImportReport:
    """Verify the file, then write the session in one transaction (replacing an existing one only if force)."""
    parsed = _read(Path(path).expanduser())
    target = name or parsed.session["name"]
    try:
        crud.validate_session_name(target)
    except SessionNameError as exc:
        raise TransferError(f"cannot import as {target!r}: {exc}; choose a name with --as") from exc
    with store.session() as db, db.begin():
        existing = crud.get_session(db, name=target)
        if existing is not None and not force:
            raise TransferError(f"a session named {target!r} already exists; nothing was imported "
                                f"(pass --as NEWNAME to import beside it, or --force to replace it)")
        if existing is not None:
            crud.delete_session(db, name=target)
            db.flush()
        chat = crud.create_session(db, name=target, model_name=parsed.session["model_name"],
                                   model_fingerprint=parsed.session["model_fingerprint"],
                                   engram_config=parsed.recipe.to_dict(), recall=parsed.session["recall"])
        for turn in parsed.transcript:
            crud.add_turn(db, chat=chat, expected_cycle=turn["index"] - 1, user_text=turn["user"],
                          reply_text=turn["reply"], prompt_tokens=turn["prompt_tokens"],
                          reply_tokens=turn["reply_tokens"], transcript_tokens=turn["transcript_tokens"],
                          gen_seconds=float(turn["gen_seconds"]), update_seconds=float(turn["update_seconds"]),
                          engram=parsed.tensors[turn["index"]], engram_config=parsed.recipe.to_dict(),
                          sources=parsed.sources[turn["index"]])
        for p in parsed.session["system"]:
            set_system_prompt(db, chat=chat, from_turn=p["from_turn"], text=p["text"])
        for f in parsed.session["forgets"]:
            edits.record_forget(db, chat=chat, cycle=f["cycle"], asked=f["asked"], removed=f["removed"],
                                slots_before=f["slots_before"], slots_after=f["slots_after"],
                                created_at=_when(f.get("created")))
    return ImportReport(target, len(parsed.transcript), existing is not None)
