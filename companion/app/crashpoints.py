"""Named crash points for the crash-safety tests (a test hook; inert unless the variable is set)."""

from __future__ import annotations

import os
import signal

# Test hook, documented in docs/RESULTS.md (Reliability): COMPANION_CRASH_AT=<point>
# makes `say` SIGKILL its own process at that named point of a turn, so the
# crash tests can kill exactly there (no timing guesswork). "mid-generation"
# fires on the Nth streamed piece of the reply (COMPANION_CRASH_AT=mid-generation:N,
# default 2). Unset, it costs one dict lookup per point.
CRASH_ENV = "COMPANION_CRASH_AT"
CRASH_POINTS = ("after-load", "mid-generation", "after-generation", "after-extraction",
                "before-commit", "mid-commit", "after-commit")
# Inside the transactions of forget, undo and retry (companion.app.memory, Companion.retry): all rows
# written, before COMMIT.
EDIT_CRASH_POINTS = ("forget-mid-commit", "undo-mid-commit", "retry-mid-commit")


def crash_point(name: str) -> None:
    """SIGKILL this process if COMPANION_CRASH_AT names this point (tests only)."""
    wanted = os.environ.get(CRASH_ENV)
    if wanted and wanted.partition(":")[0] == name:
        os.kill(os.getpid(), signal.SIGKILL)


def crash_hooks(engine, on_text):
    """Wrap on_text and engine.compress so the in-turn crash points can fire (tests only)."""
    wanted = os.environ.get(CRASH_ENV, "")
    if not wanted:
        return on_text, None
    point, _, n = wanted.partition(":")
    if point == "mid-generation":
        limit, seen = int(n or 2), [0]

        def counting(piece: str) -> None:
            if on_text is not None:
                on_text(piece)
            seen[0] += 1
            if seen[0] >= limit:
                crash_point("mid-generation")

        return counting, None
    if point == "after-generation":
        # compress() runs once generation has finished, before the engram is pooled.
        original = engine.compress

        def compress(written, ids):
            crash_point("after-generation")
            return original(written, ids)

        engine.compress = compress
        return on_text, original
    return on_text, None
