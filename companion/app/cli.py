"""The `companion` command: chat and say, sessions and their memory, search, and the resident server.

Subcommands: chat, say, sessions, search, show, memory, forget, undo, retry, fork, rename, delete, export,
import, recipes, path, completion, serve, ps.

It parses arguments, calls the service and prints; errors become one line on
stderr and exit status 1 (2 for usage errors, 130 for Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from sqlalchemy.exc import SQLAlchemyError

from companion.engine.config import ConfigError, EngramConfig
from companion.engine.cycle import InputTooLongError
from companion.engine.loading import ModelLoadError
from memory_store.errors import StoreError

from .client import connect
from .cli_args import count_arg, recipe_arg, sampling_of, shaping_opts, turn_arg
from .colour import paint
from .config_file import load as load_config
from .config_file import settle
from .continuation import cut_notice
from .dates import ago
from .fork import fork, rename
from .cli_memory import add_memory_commands
from .memory_commands import memory_commands
from .quick_say import run_say
from .repl import prompt_reader, run_repl
from .resume import history_text, resume_header
from .serve import add_parser as add_serve_parser
from .service import Companion, CompanionError
from .paths import data_paths, paths_text
from .settings import DataFolderError, config_path, history_path
from .shell import SHELLS, completion_script
from .transfer import TransferError, export_session, import_session
from .views import footer_line, sessions_table, transcript_text

ERRORS = (CompanionError, StoreError, ModelLoadError, ConfigError, InputTooLongError, TransferError,
          DataFolderError, SQLAlchemyError, ValueError, OSError)


def one_line(exc: BaseException) -> str:
    """An error as one line: SQLAlchemy and some libraries put SQL or hints on later lines."""
    text = str(getattr(exc, "orig", None) or exc) if isinstance(exc, SQLAlchemyError) else str(exc)
    text = text.strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _recipe(args) -> EngramConfig | None:
    """An explicit recipe only when a recipe option was given (else: the session's own).

    The options describe the whole recipe (what is not given takes its default),
    so a new session is built with it and an existing session must match it.
    """
    from companion.engine.recipes import PORTABLE

    # --layer/--slots without --recipe: the training-free default, which fits any shape and model
    # (a trained default's weights were made for one model's layer 16).
    given = {k: getattr(args, k) for k in ("recipe", "layer", "slots") if getattr(args, k, None) is not None}
    return EngramConfig(**{"recipe": PORTABLE, **given}) if given else None


def _companion(args) -> Companion:
    comp = Companion(db_url=args.db, model=args.model, config=_recipe(args),
                     max_new_tokens=getattr(args, "max_new_tokens", 200), system=args.system,
                     sampling=sampling_of(args), recall=args.recall)
    return connect(comp, args) if hasattr(args, "no_server") else comp  # a running server's turns, if one fits


def _for_session(comp: Companion, args, name: str) -> None:
    """config.toml's recipe (args.new_recipe) makes new sessions; unlike --recipe it binds no existing one."""
    recipe = getattr(args, "new_recipe", None)
    if recipe and _recipe(args) is None:
        comp.requested_config = None if comp.exists(name) else EngramConfig(recipe=recipe)


def cmd_say(args) -> int:
    comp = _companion(args)
    _for_session(comp, args, args.session)
    status = run_say(args, comp)
    comp.close()
    return status


def cmd_chat(args) -> int:
    comp = _companion(args)
    name = args.session
    if args.cont:
        listed = comp.sessions()
        if not listed:
            raise CompanionError("no session to continue yet; start one with `companion chat`")
        name = listed[0].name
    _for_session(comp, args, name)
    comp.check_resumable(name)
    header = resume_header(comp.store, name, system=comp.system, recall=comp.recall)
    comp.warm_up(name)  # the prompt appears once the model is ready

    def footer(report, on_text) -> str:
        if report.cut:
            on_text("\n" + cut_notice(report.reply_tokens))
        return footer_line(report)

    def respond(text, on_text):
        return footer(comp.say(name, text, on_text=on_text), on_text)

    def more(_arg, on_text):
        return footer(comp.more(name, on_text=on_text), on_text)

    def history(arg: str) -> str:
        return history_text(comp.store, name, arg)

    def stats(_arg: str) -> str:
        return "\n".join(f"{k}: {v}" for k, v in comp.stats(name).items())

    def sessions(_arg: str) -> str:
        return sessions_table(comp.sessions()) or "no sessions yet"

    def show(_arg: str) -> str:
        return transcript_text(comp, name)

    def switch(arg: str) -> str:
        nonlocal name  # the closures above read `name` when they run, so they follow the switch
        if not arg:
            return f"in session {name!r}"
        try:
            _for_session(comp, args, arg)
            comp.check_resumable(arg)  # refused as `companion chat -s NAME` would refuse it
            resumed = resume_header(comp.store, arg, system=comp.system, recall=comp.recall)
            comp.warm_up(arg)
        except Exception:
            _for_session(comp, args, name)  # a refused switch leaves the chat as it was
            raise
        name = arg
        return resumed or f"new session {arg!r} (stored from its first turn)"

    def session_names() -> list[str]:
        return [s.name for s in comp.sessions()]

    memory, retry = memory_commands(comp, lambda: name)
    run_repl(session=name, respond=respond,
             commands={"stats": stats, "sessions": sessions, "show": show, "history": history,
                       "switch": switch, **memory},
             streams={"more": more, **retry}, header=header,
             read_line=prompt_reader(history_path()), arguments={"switch": session_names},
             errors=ERRORS, describe=one_line)
    comp.close()
    return 0


def cmd_sessions(args) -> int:
    comp = Companion(db_url=args.db)
    items = comp.sessions()
    if args.json:
        print(json.dumps([{"name": s.name, "turns": s.turns, "model": s.model, "created": s.created,
                           "last_used": s.last_used, "cycle": s.cycle, "created_ago": ago(s.created),
                           "last_used_ago": ago(s.last_used)} for s in items], indent=2))
    else:
        print(sessions_table(items) or "no sessions yet")
    return 0


def cmd_search(args) -> int:
    query = " ".join(args.query)
    comp = Companion(db_url=args.db)
    try:
        hits = comp.search(query, session=args.session, limit=args.limit)
    finally:
        comp.close()
    if args.json:
        print(json.dumps([{"session": h.session, "turn": h.turn, "created": h.created_at.isoformat(),
                           "created_ago": ago(h.created_at), "matched": h.matched, "snippet": h.snippet}
                          for h in hits], indent=2))
        return 0
    if not hits:
        where = f" in session {args.session!r}" if args.session else ""
        print(f"no turns match {query.strip()!r}{where}")
        return 0
    rows = [(h.session, f"#{h.turn}", ago(h.created_at), "reply:" if h.matched == "reply" else "you:", h.snippet)
            for h in hits]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for *cols, who, snippet in rows:
        print("  ".join([*(c.ljust(w) for c, w in zip(cols, widths)), f"{who} {snippet}"]))
    return 0


def cmd_show(args) -> int:
    comp = Companion(db_url=args.db)
    if args.json:
        info, views = comp.show(args.name)
        print(json.dumps({**info, "turns": [v.__dict__ for v in views]}, indent=2))
    else:
        print(transcript_text(comp, args.name))
    return 0


def cmd_fork(args) -> int:
    comp = Companion(db_url=args.db)
    report = fork(comp.store, args.name, args.new, at=args.at)
    comp.close()
    print(f"forked session {report.source!r} after turn {report.at} as {report.name!r}")
    return 0


def cmd_rename(args) -> int:
    comp = Companion(db_url=args.db)
    rename(comp.store, args.old, args.new)
    comp.close()
    print(f"renamed session {args.old!r} to {args.new!r}")
    return 0


def cmd_delete(args) -> int:
    comp = Companion(db_url=args.db)
    if not comp.delete(args.name):
        raise CompanionError(f"no session named {args.name!r}")
    print(f"deleted session {args.name!r}")
    return 0


def cmd_export(args) -> int:
    comp = Companion(db_url=args.db)
    report = export_session(comp.store, args.name, args.file, force=args.force)
    comp.close()
    for cycle, reason in sorted(report.damaged.items()):
        print(f"companion: warning: left out the engram of cycle {cycle}: {reason}", file=sys.stderr)
    note = f"; {len(report.damaged)} damaged engram(s) left out (see above)" if report.damaged else ""
    print(f"exported session {report.name!r}: {report.turns} turns, {report.engrams} engrams -> {report.path}{note}")
    return 0


def cmd_import(args) -> int:
    comp = Companion(db_url=args.db)
    report = import_session(comp.store, args.file, name=args.as_name, force=args.force)
    comp.close()
    how = "replaced" if report.replaced else "imported"
    print(f"{how} session {report.name!r}: {report.turns} turns")
    return 0


def cmd_path(args) -> int:
    paths = data_paths(args.db)
    print(json.dumps(paths, indent=2) if args.json else paths_text(paths))
    return 0


def cmd_completion(args) -> int:
    print(completion_script(build_parser(), args.shell), end="")
    return 0


def recipe_table() -> list[dict]:
    """The registered recipes as plain data (no model is loaded)."""
    from companion.engine.recipes import DEFAULT, PORTABLE, all_recipes

    return [{"name": r.name, "default": r.name == DEFAULT, "portable": r.name == PORTABLE, "supported": r.supported, "description": r.description,
             "writer": asdict(r.writer), "reader": asdict(r.reader), "at_layer": r.reader.depth_is_layer,
             "extra_columns": r.writer.extra_columns, "fixed": sorted(r.fixed)} for r in all_recipes()]


def cmd_recipes(args) -> int:
    every = recipe_table()
    table = [r for r in every if args.all or r["supported"]]
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    width = max(len(r["name"]) for r in table)
    for r in table:
        mark, note = ("*", "(default) ") if r["default"] else (" ", "(default on other models) " if r["portable"]
                                                                else "" if r["supported"] else "(experimental) ")
        print(f"{mark} {r['name']:<{width}}  {note}{r['description']}")
    if not args.all:
        hidden = len(every) - len(table)
        print(f"\n{hidden} experimental recipes (kept so old sessions resume and past results reproduce): "
              "`companion recipes --all`")
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("companion")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="companion", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    p.add_argument("--db", default=None, help="SQLAlchemy URL (default: COMPANION_DB, else a SQLite file in COMPANION_HOME)")
    sub = p.add_subparsers(dest="command", required=True)

    from companion.engine.recipes import DEFAULT, PORTABLE

    def model_opts(sp):
        sp.add_argument("--model", default=None, help="Hugging Face id, local folder or .gguf path (default: embedded SmolLM2-135M)")
        sp.add_argument("--recipe", type=recipe_arg, default=None, metavar="NAME",
                        help=f"engram recipe of a new session (default {DEFAULT} on the embedded model, {PORTABLE} "
                             "on others or with --layer/--slots; `companion recipes` lists them)"
                        if DEFAULT != PORTABLE else f"engram recipe of a new session (default {DEFAULT}; "
                                                    "`companion recipes` lists them)")
        sp.add_argument("--layer", type=int, default=None, help="hidden-state layer to extract (default 16)")
        sp.add_argument("--slots", type=int, default=None, help="vectors per engram (default 32)")
        sp.add_argument("--max-new-tokens", type=count_arg, default=None,
                        help="longest reply in tokens (default 200)")
        shaping_opts(sp)

    chat = sub.add_parser("chat", help="interactive chat (resumes the session if it exists)")
    chat.add_argument("--session", "-s", default="default")
    chat.add_argument("-c", "--continue", dest="cont", action="store_true", help="continue the most recent session")
    model_opts(chat)
    chat.add_argument("--no-server", action="store_true", help="run here even if `companion serve` is running")
    chat.set_defaults(func=cmd_chat)

    say = sub.add_parser("say", help="one turn, non-interactive; text from arguments or stdin")
    say.add_argument("--session", "-s", required=True)
    say.add_argument("--json", action="store_true", help="print the turn report as JSON")
    say.add_argument("--stream", action="store_true", help="print the reply as it is generated")
    say.add_argument("--more", action="store_true", help="continue the last reply (one cut at --max-new-tokens)")
    say.add_argument("text", nargs="*")
    model_opts(say)
    say.add_argument("--no-server", action="store_true", help="run here even if `companion serve` is running")
    say.set_defaults(func=cmd_say)

    ls = sub.add_parser("sessions", help="list sessions")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_sessions)

    sr = sub.add_parser("search", help="find turns of every session by their words, newest first",
                        description="Every word must appear (case ignored, whole words); \"two words\" in quotes "
                                    "must appear together; a word ending in * matches words it begins (cat*).")
    sr.add_argument("query", nargs="+", metavar="WORD")
    sr.add_argument("--session", "-s", default=None, metavar="NAME", help="only this session's turns")
    sr.add_argument("--limit", type=count_arg, default=20, metavar="N", help="at most N turns (default 20)")
    sr.add_argument("--json", action="store_true", help="a JSON list of the matching turns")
    sr.set_defaults(func=cmd_search)

    show = sub.add_parser("show", help="transcript and per-turn engram stats")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)

    add_memory_commands(sub, model_opts, _companion)

    fk = sub.add_parser("fork", help="a new session from NAME's engram after turn --at, with the transcript so far")
    fk.add_argument("name")
    fk.add_argument("new")
    fk.add_argument("--at", type=turn_arg, default=None, metavar="TURN",
                    help="fork after this turn (default: the latest)")
    fk.set_defaults(func=cmd_fork)

    rn = sub.add_parser("rename", help="rename a session")
    rn.add_argument("old")
    rn.add_argument("new")
    rn.set_defaults(func=cmd_rename)

    delete = sub.add_parser("delete", help="delete a session and its engrams")
    delete.add_argument("name")
    delete.set_defaults(func=cmd_delete)

    exp = sub.add_parser("export", help="write a session (transcript + engrams) to one safetensors file")
    exp.add_argument("name")
    exp.add_argument("file")
    exp.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    exp.set_defaults(func=cmd_export)

    imp = sub.add_parser("import", help="add a session from a file made by `companion export` (verified first)")
    imp.add_argument("file")
    imp.add_argument("--as", dest="as_name", default=None, metavar="NAME", help="import under another name")
    imp.add_argument("--force", action="store_true", help="replace an existing session of that name")
    imp.set_defaults(func=cmd_import)

    rec = sub.add_parser("recipes", help="list the supported engram recipes (writer + reader), the default marked *")
    rec.add_argument("--json", action="store_true")
    rec.add_argument("--all", action="store_true", help="also the experimental recipes")
    rec.set_defaults(func=cmd_recipes)

    pth = sub.add_parser("path", help="where the data lives: data folder, database, model cache, config file, "
                                      "input history")
    pth.add_argument("--json", action="store_true")
    pth.set_defaults(func=cmd_path)

    add_serve_parser(sub)

    cpl = sub.add_parser("completion", help="print a shell completion script: eval \"$(companion completion bash)\"")
    cpl.add_argument("shell", choices=SHELLS)
    cpl.set_defaults(func=cmd_completion)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        if hasattr(args, "temperature"):  # a command with model options: config.toml fills what no flag gave
            settle(args, load_config(config_path()))
        return args.func(args)
    except KeyboardInterrupt:
        print("\ncancelled: nothing was stored", file=sys.stderr)
        return 130
    except ERRORS as exc:
        print(f"{paint('companion: error:', 'error', sys.stderr)} {one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
