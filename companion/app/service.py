"""The companion as the CLI and REPL see it: sessions, turns and stats, no tensors or SQL.

Nothing is written until a turn has finished: the turn's text and its engram
are committed in one transaction, guarded by the session's cycle number so two
processes on one session can never interleave turns.
"""

from __future__ import annotations

import json
from typing import Callable

from companion.engine.config import ConfigError, EngramConfig
from companion.engine.cycle import Engine, chat_ids
from companion.engine.engram import mean_row_norm
from companion.engine.loading import LanguageModel, load_model
from companion.engine.recipes import default_for, get_recipe
from companion.engine.sampling import Sampling
from companion.engine.sources import parse_sources, sources_json
from memory_store import crud, edits, open_store
from memory_store.errors import CorruptEngramError, StaleSessionError
from memory_store.settings import set_recall, set_system_prompt, system_prompt_at, system_prompts

from .continuation import continuation_prompt
from .crashpoints import crash_hooks, crash_point
from .errors import CompanionError
from .inputs import clean_input, clean_system  # noqa: F401  (clean_input: re-exported)
from .recall import check_recall, recalled_input
from .reports import TurnReport, TurnView
from .settings import cache_dir, database_url

__all__ = ["Companion", "CompanionError", "TurnReport", "TurnView", "clean_input"]


class Companion:
    """Opens the store, loads the model on first need, and runs turns for named sessions."""

    def __init__(
        self,
        *,
        db_url: str | None = None,
        model: str | None = None,
        config: EngramConfig | None = None,
        max_new_tokens: int = 200,
        quiet: bool = False,
        lm: LanguageModel | None = None,
        system: str | None = None,
        sampling: Sampling | None = None,
        recall: int | None = None,
    ):
        """system, recall: None keeps the session's own (a new session: none, 0); given, they are
        stored with a new session, and on an existing one apply from its next turn on."""
        try:
            self.recall = None if recall is None else check_recall(recall)
        except ValueError as exc:
            raise CompanionError(str(exc)) from None
        self.system, self.sampling = clean_system(system), sampling or Sampling()
        self.store = open_store(database_url(db_url))
        self.model_spec, self.requested_config = model, config
        self.max_new_tokens, self.quiet = max_new_tokens, quiet
        self._lm = lm
        self._engines: dict[str, Engine] = {}
        self._recalled: dict[str, tuple[int, ...]] = {}  # per session: what this process's last turn recalled

    # -- model --------------------------------------------------------------
    @property
    def lm(self) -> LanguageModel:
        if self._lm is None:
            self._lm = load_model(self.model_spec, cache_root=cache_dir(), quiet=self.quiet)
        return self._lm

    def engine(self, config: EngramConfig) -> Engine:
        key = config.to_json()
        if key not in self._engines:
            self._engines[key] = Engine(self.lm, config)
        return self._engines[key]

    def _recipe_for(self, chat) -> EngramConfig:
        """The session's own recipe; a different one asked for explicitly is refused."""
        if chat is None:
            return self.requested_config or EngramConfig(recipe=default_for(self.lm))
        stored = EngramConfig.from_dict(json.loads(chat.engram_config))
        if self.requested_config is not None and not self.requested_config.same_recipe(stored):
            diff = "; ".join(stored.differences(self.requested_config))
            raise CompanionError(
                f"session {chat.name!r} was built with a different engram recipe ({diff}); "
                f"drop the recipe options to resume it, or start a new session"
            )
        return stored

    def _check_model(self, chat) -> None:
        if chat is not None and chat.model_fingerprint != self.lm.fingerprint:
            raise CompanionError(
                f"session {chat.name!r} was built with model {chat.model_name!r} (weights "
                f"{chat.model_fingerprint[:12]}), but this run loaded {self.lm.name!r} (weights "
                f"{self.lm.fingerprint[:12]}); resume it with --model {chat.model_name}, or start a new session"
            )

    # -- turns --------------------------------------------------------------
    def _template_len(self, messages: list[dict]) -> int:
        tok = self.lm.tokenizer
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            return len(ids["input_ids"] if hasattr(ids, "keys") else ids)
        pairs = [(m["content"], n["content"]) for m, n in zip(messages[::2], messages[1::2])]
        return sum(len(chat_ids(tok, u, r)) for u, r in pairs) + len(chat_ids(tok, messages[-1]["content"]))

    def transcript_tokens(self, last: tuple[str, str, int] | None, text: str) -> int:
        """Tokens the whole transcript plus `text` would take as a prompt.

        Kept incrementally from the previous turn (its user text, reply and
        transcript count), so a turn's cost never depends on the session's length.
        """
        user = {"role": "user", "content": text}
        if last is None:
            return self._template_len([user])
        prev_user, prev_reply, prev_total = last
        before = self._template_len([{"role": "user", "content": prev_user}])
        after = self._template_len([{"role": "user", "content": prev_user},
                                    {"role": "assistant", "content": prev_reply}, user])
        return prev_total + after - before

    def say(self, name: str, text: str, *, on_text: Callable[[str], None] | None = None) -> TurnReport:
        """One turn of session `name` (created on first use). Stores nothing if interrupted."""
        return self._turn(crud.validate_session_name(name), clean_input(text), on_text)

    def more(self, name: str, *, on_text: Callable[[str], None] | None = None) -> TurnReport:
        """Continue the session's last reply (one cut at max_new_tokens) as a turn of its own."""
        name = crud.validate_session_name(name)
        last = self._last_turn(name)
        if last is None:
            raise CompanionError(f"nothing to continue: session {name!r} has no reply yet")
        return self._turn(name, continuation_prompt(last.reply_text), on_text, recall=False, after=last.index)

    def retry(self, name: str, *, on_text: Callable[[str], None] | None = None) -> TurnReport:
        """Make the last reply again from the engram before it (the sampling options apply) and replace
        that turn with the new one in one transaction; interrupted, the old turn stays."""
        name = crud.validate_session_name(name)
        last = self._last_turn(name)
        if last is None:
            raise CompanionError(f"nothing to retry: session {name!r} has no turns")
        return self._turn(name, last.user_text, on_text, after=last.index, replace=True)

    def _last_turn(self, name: str):
        """The session's newest turn (None: no such session, or no turns)."""
        with self.store.session() as db:
            chat = crud.get_session(db, name=name)
            return crud.last_turn(db, chat=chat) if chat is not None else None

    def _turn(self, name: str, text: str, on_text, *, recall: bool = True, after: int | None = None,
              replace: bool = False) -> TurnReport:
        """One turn; after: the cycle the session must be at; replace: make turn `after` again instead."""
        with self.store.session() as db:
            chat = crud.get_session(db, name=name)
            if after is not None and (chat is None or chat.cycle != after):
                raise CompanionError(f"session {name!r} moved on in another process; nothing was "
                                     f"{'retried' if replace else 'continued'}")
            config = self._recipe_for(chat)
            engram, sources, expected = None, None, 0
            last = None
            k = self.recall if self.recall is not None else (chat.recall if chat is not None else 0)
            system, stored_system = self.system, None
            if chat is not None:
                expected = chat.cycle - 1 if replace else chat.cycle
                # Verified before the model is even loaded: a damaged engram is never injected.
                engram, sources = self._memory_at(db, chat, config, expected)
                turn = edits.turn_at(db, chat=chat, index=expected) if expected else None
                last = None if turn is None else (turn.user_text, turn.reply_text, turn.transcript_tokens)
                stored_system = system_prompt_at(db, chat=chat, turn=expected + 1)
                system = stored_system if system is None else system
            # Recorded with the turn, as of this turn, only when it changes what applies.
            new_system = self.system is not None and (self.system or None) != stored_system
            model_text, recalled = recalled_input(db, chat=chat, text=text, k=k if recall else 0)
            self._check_model(chat)
            self._check_width(chat, engram, config)
        engine = self.engine(config)
        config = engine.config  # with the hash of the recipe's fixed tensors filled in
        crash_point("after-load")
        on_text, original_compress = crash_hooks(engine, on_text)
        try:
            result = engine.run_turn(engram, model_text, on_text=on_text, max_new_tokens=self.max_new_tokens,
                                     system=system or None, sampling=self.sampling, turn=expected + 1,
                                     sources=sources)
        finally:
            if original_compress is not None:
                engine.compress = original_compress
        crash_point("after-extraction")
        transcript = self.transcript_tokens(last, text)
        crash_point("before-commit")
        try:
            with self.store.session() as db, db.begin():
                chat = crud.get_session(db, name=name)
                if chat is None:
                    if expected != 0:
                        raise CompanionError(f"session {name!r} was deleted while this turn ran; nothing was stored")
                    chat = crud.create_session(db, name=name, model_name=self.lm.name, recall=k,
                                               model_fingerprint=self.lm.fingerprint, engram_config=config.to_dict())
                elif self.recall is not None and chat.recall != k:
                    set_recall(db, chat=chat, recall=k)
                if replace:  # the guard: the session must still be at the turn being made again
                    edits.drop_last_turn(db, chat=chat, expected_cycle=expected + 1, keep_prompt=True)
                if new_system:
                    set_system_prompt(db, chat=chat, from_turn=expected + 1, text=self.system)
                crud.add_turn(db, chat=chat, expected_cycle=expected, user_text=text, reply_text=result.reply,
                              prompt_tokens=result.prompt_tokens, reply_tokens=result.reply_tokens,
                              transcript_tokens=transcript, gen_seconds=result.gen_seconds,
                              update_seconds=result.update_seconds, engram=result.engram,
                              engram_config=config.to_dict(), sources=sources_json(result.sources))
                crash_point("retry-mid-commit" if replace else "mid-commit")
        except StaleSessionError as exc:
            # Optimistic concurrency: the other process's turn stands, this one is dropped whole.
            raise CompanionError(
                f"session {name!r} moved on in another process while this turn ran; this turn was "
                "not stored, so send it again"
            ) from exc
        crash_point("after-commit")
        self._recalled[name] = tuple(recalled)
        return TurnReport(result.reply, expected + 1, result.prompt_tokens, transcript, result.reply_tokens,
                          result.gen_seconds, result.update_seconds, mean_row_norm(result.engram), result.cut,
                          tuple(recalled))

    def _latest(self, db, chat, config: EngramConfig | None = None):
        """The session's newest engram, verified; refuses one that is damaged, missing or of another recipe."""
        return self._memory_at(db, chat, config, chat.cycle)[0]

    def _memory_at(self, db, chat, config: EngramConfig | None, cycle: int):
        """(the engram stored with turn `cycle`, verified, or None before the first; its slot sources)."""
        try:
            found = crud.latest_engram(db, chat=chat) if cycle == chat.cycle else edits.engram_at(db, chat=chat,
                                                                                                  cycle=cycle)
        except CorruptEngramError as exc:
            raise CompanionError(f"refusing to inject a damaged engram: {exc}; `companion show {chat.name}` "
                                 f"and `companion export` still work") from exc
        if cycle == 0 and (found is None or found[1].cycle == 0):
            return None, None
        if found is None or found[1].cycle != cycle:
            have = "none" if found is None else f"cycle {found[1].cycle}"
            raise CompanionError(f"refusing to resume session {chat.name!r}: the engram of cycle {cycle} "
                                 f"is missing (newest stored: {have})")
        tensor, row = found
        if not EngramConfig.from_dict(json.loads(row.config)).same_recipe(
                EngramConfig.from_dict(json.loads(chat.engram_config))):
            raise CompanionError(f"refusing to inject the engram of session {chat.name!r} cycle {row.cycle}: it was "
                                 f"made with recipe {row.config}, the session says {chat.engram_config}")
        # A selecting recipe's engram holds fewer rows while its first turns fill it; never more.
        if config is not None and (tensor.dim() != 2 or not get_recipe(config.recipe).rows_ok(tensor.shape[0],
                                                                                              config.slots)):
            raise CompanionError(f"refusing to inject the engram of session {chat.name!r} cycle {row.cycle}: shape "
                                 f"{tuple(tensor.shape)} does not fit the recipe's {config.slots} slots")
        return tensor, parse_sources(row.sources, tensor.shape[0])

    def _check_width(self, chat, engram, config: EngramConfig | None = None) -> None:
        want = get_recipe((config or EngramConfig(recipe=default_for(self.lm))).recipe).stored_width(self.lm.hidden_size)
        if engram is not None and engram.shape[-1] != want:
            raise CompanionError(f"refusing to inject the engram of session {chat.name!r}: its width "
                                 f"{engram.shape[-1]} does not match this model and recipe ({want}: hidden size "
                                 f"{self.lm.hidden_size} plus the recipe's per-slot columns)")

    # -- sessions -------------------------------------------------------------
    def sessions(self) -> list:
        with self.store.session() as db:
            return crud.list_sessions(db)

    def exists(self, name: str) -> bool:
        with self.store.session() as db:
            return crud.get_session(db, name=crud.validate_session_name(name)) is not None

    def warm_up(self, name: str) -> None:
        """Load the model and the session's recipe now, so the first reply does not wait for it."""
        with self.store.session() as db:
            chat = crud.get_session(db, name=crud.validate_session_name(name))
            config = self._recipe_for(chat)
        self.engine(config)

    def check_resumable(self, name: str) -> None:
        """Refuse early (before the first prompt) a session this model or recipe cannot continue."""
        with self.store.session() as db:
            chat = crud.get_session(db, name=crud.validate_session_name(name))
            if chat is not None:
                config = self._recipe_for(chat)
                engram = self._latest(db, chat, config)
                self._check_model(chat)
                self._check_width(chat, engram, config)

    def show(self, name: str) -> tuple[dict, list[TurnView]]:
        with self.store.session() as db:
            chat = crud.get_session(db, name=crud.validate_session_name(name))
            if chat is None:
                raise CompanionError(f"no session named {name!r}; `companion sessions` lists them")
            rows = {r.cycle: r for r in crud.engram_rows(db, chat=chat)}
            views = []
            for t in crud.turns(db, chat=chat):
                row = rows.get(t.index)
                status = "missing"
                if row is not None:
                    try:
                        crud.load_engram(row, where=f"session {name!r} cycle {t.index}")
                        status = "ok"
                    except CorruptEngramError as exc:
                        status = f"damaged: {exc}"
                views.append(TurnView(t.index, t.user_text, t.reply_text, t.prompt_tokens, t.transcript_tokens,
                                      t.reply_tokens, t.gen_seconds + t.update_seconds,
                                      row.shape if row else "-", row.norm if row else 0.0, status))
            info = {"name": chat.name, "model": chat.model_name, "fingerprint": chat.model_fingerprint,
                    "recipe": _recipe_fields(chat.engram_config), "cycle": chat.cycle,
                    "created": chat.created_at.isoformat(), "last_used": chat.last_used_at.isoformat(),
                    "recall": chat.recall,
                    "system": [{"from_turn": p.from_turn, "text": p.text} for p in system_prompts(db, chat=chat)],
                    "forgets": [{"cycle": f.cycle, "asked": f.asked, "removed": json.loads(f.removed),
                                 "slots_before": f.slots_before, "slots_after": f.slots_after,
                                 "when": f.created_at.isoformat()} for f in edits.forgets(db, chat=chat)]}
            return info, views

    def stats(self, name: str) -> dict:
        """Cycle count, the last turn's prompt vs full-transcript tokens, engram norm."""
        try:
            info, views = self.show(name)
        except CompanionError:
            return {"name": name, "cycle": 0, "note": "no turns yet"}
        last = views[-1] if views else None
        return {
            "name": name,
            "cycle": info["cycle"],
            "recipe": EngramConfig.from_dict(info["recipe"]).describe(),
            "prompt_tokens": last.prompt_tokens if last else 0,
            "transcript_tokens": last.transcript_tokens if last else 0,
            "engram_norm": round(last.engram_norm, 3) if last else 0.0,
            "engram_shape": last.engram_shape if last else "-",
            "recall": info["recall"],
            # What --recall put in front of this process's last turn (not stored: it is the turn's input).
            "recalled": ("no turn yet in this chat" if name not in self._recalled
                         else ", ".join(f"#{i}" for i in self._recalled[name]) or "none"),
            "system": next((p["text"] for p in reversed(info["system"])), "") or "(the model's default)",
            "sampling": self.sampling.describe(),
        }

    def delete(self, name: str) -> bool:
        with self.store.session() as db, db.begin():
            return crud.delete_session(db, name=crud.validate_session_name(name))

    def search(self, query: str, *, session: str | None = None, limit: int = 20) -> list:
        """Turns of every session (or only `session`'s) that match query, newest first; loads no model."""
        from memory_store.search import search_turns  # here, so this method is the whole of search's change

        with self.store.session() as db:
            if session is not None and crud.get_session(db, name=crud.validate_session_name(session)) is None:
                raise CompanionError(f"no session named {session!r}; `companion sessions` lists them")
            return search_turns(db, query=query, session=session, limit=limit)

    def close(self) -> None:
        self.store.close()


def _recipe_fields(stored: str) -> dict:
    """The fields the session's recipe has (old sessions stored the seed's knobs for every recipe);
    the stored dict as it is when it cannot be read, so `show` still shows a session it cannot resume."""
    raw = json.loads(stored)
    try:
        return EngramConfig.from_dict(raw).to_dict()
    except ConfigError:
        return raw
