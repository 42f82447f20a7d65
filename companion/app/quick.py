"""The `companion` entry point, and the one command that must answer before torch loads.

Shell completion runs `companion _sessions` at every Tab on a session name. Through
the full CLI that waits seconds for torch and the model code to import, so this lists
the names through memory_store.names (SQLAlchemy alone), and hands every other command
to companion.app.cli.
"""

from __future__ import annotations

import sys
from pathlib import Path

HIDDEN = "_sessions"  # not in `companion --help`: it is for the completion scripts


def print_session_names(argv: list[str]) -> int:
    """`companion _sessions [--db URL]`: one name a line; a failure is one line on stderr, status 1."""
    from sqlalchemy.exc import SQLAlchemyError

    from memory_store.names import session_names

    from .settings import DataFolderError, database_url

    db = argv[argv.index("--db") + 1] if "--db" in argv[:-1] else None
    try:
        names = session_names(database_url(db))
    except (SQLAlchemyError, DataFolderError, ValueError, OSError) as exc:
        text = str(getattr(exc, "orig", None) or exc).strip()
        print(f"companion: error: {text.splitlines()[0] if text else type(exc).__name__}", file=sys.stderr)
        return 1
    print("\n".join(names), end="\n" if names else "")
    return 0


# `companion ps` and `serve --stop` talk to a server over HTTP: no reason to wait for torch.
SERVER_VERBS = (["ps"], ["ps", "--json"], ["serve", "--stop"])


def server_verb(argv: list[str]) -> int:
    import argparse

    from .errors import CompanionError
    from .serve import cmd_ps, stop_server
    from .settings import DataFolderError

    try:
        return stop_server() if argv[0] == "serve" else cmd_ps(argparse.Namespace(json="--json" in argv))
    except (CompanionError, DataFolderError, OSError) as exc:
        print(f"companion: error: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == [HIDDEN]:
        return print_session_names(argv[1:])
    if argv in SERVER_VERBS:
        return server_verb(argv)
    if argv[:1] == ["say"]:
        from .quick_say import fast_say

        code = fast_say(argv[1:])  # through a running server, before torch loads; None: not for it
        if code is not None:
            return code
    from .cli import main as cli_main

    return cli_main(argv)
