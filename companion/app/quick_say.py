"""`companion say` through a running server without importing torch: the point of a warm server.

The full CLI imports the model code before it parses anything (3 s on two
cores), which would cost a served one-token turn most of what the server saves.
So a plain `say` (the options below, plainly valid values, no config.toml) is
parsed here and sent to the server of this data folder; anything else, a value
to refuse, or no usable server, returns None and the full CLI runs it, which
gives the same refusals and the same in-process turn as ever. The output,
streaming, Ctrl-C and exit codes are cmd_say's.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from .client import RemoteCompanion, usable
from .colour import paint
from .continuation import cut_notice
from .errors import CompanionError
from .settings import DataFolderError, config_path


class _Decline(Exception):
    """Not a plain `say`: the full CLI takes it."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _Decline(message)


def _parse(argv: list[str]):
    p = _Parser(add_help=False, allow_abbrev=False)
    p.add_argument("--session", "-s", required=True)
    for flag in ("--json", "--stream", "--more"):
        p.add_argument(flag, action="store_true")
    p.add_argument("--system", default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("text", nargs="*")
    args = p.parse_args(argv)
    t, top, seed, n = args.temperature, args.top_p, args.seed, args.max_new_tokens
    plain = (t is None or (math.isfinite(t) and t >= 0)) and (top is None or (0 < top <= 1)) \
        and (seed is None or 0 <= seed < 2**62) and (n is None or 1 <= n <= 100_000) \
        and ((top is None and seed is None) or (t or 0) > 0)
    if not plain:
        raise _Decline("a value the full CLI refuses in its own words")
    args.temperature, args.top_p, args.max_new_tokens = t or 0.0, 1.0 if top is None else top, n or 200
    return args


def fast_say(argv: list[str]) -> int | None:
    """cmd_say through the server; None when the full CLI must run it."""
    try:
        args = _parse(argv)
        info = usable(args)
        if info is None or config_path().exists():
            return None  # no server; or config.toml may fill options: the full CLI settles them
    except (_Decline, DataFolderError, OSError):
        return None
    try:
        return run_say(args, RemoteCompanion(None, info, args))
    except KeyboardInterrupt:
        print("\ncancelled: nothing was stored", file=sys.stderr)
        return 130
    except CompanionError as exc:
        print(f"{paint('companion: error:', 'error', sys.stderr)} {exc}", file=sys.stderr)
        return 1


def run_say(args, remote) -> int:
    """cmd_say's body over anything with say()/more() (a Companion, or a RemoteCompanion): the text from
    the arguments or stdin, the reply streamed or printed, the cut notice; shared by both paths so their
    output cannot drift apart."""
    text = " ".join(args.text) if args.text else None
    if args.more:
        if text is not None:
            raise CompanionError("--more continues the last reply; give it no text")
    elif text is None or text == "-":
        raw = sys.stdin.buffer.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CompanionError(f"standard input is not valid UTF-8 (byte {exc.start}); nothing was sent") from exc

    def on_text(piece: str) -> None:
        if args.stream:
            sys.stdout.write(piece)
            sys.stdout.flush()

    report = remote.more(args.session, on_text=on_text) if args.more else remote.say(args.session, text,
                                                                                     on_text=on_text)
    if args.json:
        print(json.dumps({"session": args.session, **report.__dict__}))
    elif args.stream:
        print()
    else:
        print(report.reply)
    if report.cut and not args.json:
        print(cut_notice(report.reply_tokens, f"`companion say -s {args.session} --more`"), file=sys.stderr)
    return 0
