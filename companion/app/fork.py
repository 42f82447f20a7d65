"""`companion fork` and `companion rename`: new names for a conversation, never a changed one.

A fork starts from the source's engram after turn --at (the rolling engram
is the whole memory, so branching is copying one stored row per turn kept)
with the transcript up to there. The source is only read.
"""

from __future__ import annotations

from dataclasses import dataclass

from memory_store import crud
from memory_store.branching import fork_session, rename_session

from .errors import CompanionError


@dataclass(frozen=True)
class ForkReport:
    source: str
    name: str
    at: int  # the fork holds the source's turns 1..at and the engram of turn `at`


def _unknown(name: str) -> CompanionError:
    return CompanionError(f"no session named {name!r}; `companion sessions` lists them")


def _free(db, name: str) -> None:
    if crud.get_session(db, name=name) is not None:
        raise CompanionError(f"a session named {name!r} already exists; choose another name "
                             f"(or `companion delete {name}` first)")


def fork(store, name: str, new: str, *, at: int | None = None) -> ForkReport:
    """Create session `new` from `name` after turn `at` (default: its latest); one transaction."""
    name, new = crud.validate_session_name(name), crud.validate_session_name(new)
    with store.session() as db, db.begin():
        source = crud.get_session(db, name=name)
        if source is None:
            raise _unknown(name)
        at = source.cycle if at is None else at
        if not 0 <= at <= source.cycle:
            raise CompanionError(f"--at {at} is outside session {name!r}, which has turns 1..{source.cycle} "
                                 f"(0 forks before the first)")
        _free(db, new)
        fork_session(db, source=source, name=new, at=at)
    return ForkReport(name, new, at)


def rename(store, old: str, new: str) -> None:
    old, new = crud.validate_session_name(old), crud.validate_session_name(new)
    with store.session() as db, db.begin():
        if crud.get_session(db, name=old) is None:
            raise _unknown(old)
        _free(db, new)
        rename_session(db, name=old, new_name=new)
