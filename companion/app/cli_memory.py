"""The `companion` subcommands that see and correct a session's memory: memory, forget, undo, retry."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from .cli_args import turn_arg
from .errors import CompanionError
from .memory import forget, memory_view, undo
from .views import forget_text, memory_text


def _plain(args):
    from .service import Companion

    return Companion(db_url=args.db)


def cmd_memory(args) -> int:
    view = memory_view(_plain(args).store, args.name)
    if args.json:
        print(json.dumps({k: v for k, v in asdict(view).items()}, indent=2))
    else:
        print(memory_text(view))
    return 0


def cmd_forget(args) -> int:
    text = " ".join(args.text) if args.text else None
    if (text is None) == (args.turn is None):
        raise CompanionError("give the words to forget, or --turn N (not both)")
    print(forget_text(forget(_plain(args).store, args.name, text=text, turn=args.turn)))
    return 0


def cmd_undo(args) -> int:
    index, user = undo(_plain(args).store, args.name)
    print(f"undid turn {index} of session {args.name!r} ({user[:60]!r}); it goes on from the memory after "
          f"turn {index - 1}")
    return 0


def cmd_retry(args) -> int:
    comp = args.companion_of(args)
    report = comp.retry(args.name, on_text=(lambda piece: (sys.stdout.write(piece), sys.stdout.flush()))
                        if args.stream else None)
    if args.json:
        print(json.dumps({"session": args.name, **report.__dict__}))
    else:
        print() if args.stream else print(report.reply)
    comp.close()
    return 0


def add_memory_commands(sub, model_opts, companion_of) -> None:
    """Their parsers, on the CLI's subparsers. retry runs a turn: model_opts adds the options a turn takes,
    and companion_of(args) makes the Companion that runs it, as for say."""
    mem = sub.add_parser("memory", help="what a session's engram holds: the words its slots came from")
    mem.add_argument("name")
    mem.add_argument("--json", action="store_true")
    mem.set_defaults(func=cmd_memory)

    fg = sub.add_parser("forget", help="take the slots that came from TEXT (or from --turn N) out of the memory")
    fg.add_argument("name")
    fg.add_argument("text", nargs="*")
    fg.add_argument("--turn", type=turn_arg, default=None, metavar="N", help="forget what entered in turn N")
    fg.set_defaults(func=cmd_forget)

    ud = sub.add_parser("undo", help="drop a session's last turn; it goes on from the memory before it")
    ud.add_argument("name")
    ud.set_defaults(func=cmd_undo)

    rt = sub.add_parser("retry", help="make a session's last reply again from the same memory, replacing it")
    rt.add_argument("name")
    rt.add_argument("--json", action="store_true", help="print the turn report as JSON")
    rt.add_argument("--stream", action="store_true", help="print the reply as it is generated")
    model_opts(rt)
    rt.set_defaults(func=cmd_retry, companion_of=companion_of)

