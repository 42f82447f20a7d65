"""Full-text search over every session's turns: FTS5 on SQLite, tsvector on PostgreSQL, LIKE elsewhere.

Users type words, not a query language. Every word must appear (in the user's text or the reply, in
any order, case ignored); words in double quotes must appear together in that order ("new york");
a word ending in * matches any word it begins (cat* finds cats and catalogue). Nothing else is
syntax, so AND, NOT, parentheses or an unbalanced quote are searched for as text and no input can be
a query syntax error. Words are matched whole, without stemming: `cat` does not find "cats".

The index objects come from alembic/versions/0005_turn_search.py; a SQLite built without FTS5 (or a
database not yet migrated) is searched with the LIKE fallback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, String, and_, case, cast, column, func, literal_column, or_, select, table, text
from sqlalchemy.dialects.postgresql import TSQUERY
from sqlalchemy.orm import Session

from memory_store.errors import SearchError
from memory_store.models import ChatSession, Turn

FTS_TABLE = "turns_fts"  # SQLite: the FTS5 table (and its shadow tables turns_fts_*)
PG_INDEX = "ix_turns_fts"  # PostgreSQL: the GIN index on _PG_DOCUMENT
# Exactly the indexed expression, or PostgreSQL will not use the index; constants inline, not bound.
_PG_DOCUMENT = "to_tsvector('simple'::regconfig, turns.user_text || ' ' || turns.reply_text)"
_PG_CONFIG = literal_column("'simple'::regconfig")

# Control characters cannot be in a turn (companion/app/inputs.py refuses them), so a highlight in
# the snippet shows unambiguously which of the two texts matched; they become [ ] for display.
_OPEN, _CLOSE = "\x02", "\x03"
_SNIPPET_TOKENS = 16  # words of context in a snippet (FTS5 counts tokens; ts_headline words)
_WINDOW = 60  # characters either side of the match in a fallback snippet
_TOKENS = re.compile(r'"([^"]*)"|(\S+)')
_HAS_WORD = re.compile(r"[^\W_]")  # a letter or digit: what every tokenizer keeps


@dataclass(frozen=True)
class Hit:
    """One matching turn; snippet is one line with the matched words in [brackets]."""

    session: str
    turn: int
    created_at: datetime
    snippet: str
    matched: str  # which text holds the query's words: "user", "reply" or "both"


@dataclass(frozen=True)
class _Term:
    text: str  # a word or a phrase, as typed, without its quotes or trailing *
    prefix: bool


def parse_query(query: str) -> list[_Term]:
    """The terms of a query (see the module docstring); SearchError if there is nothing to look for."""
    if not isinstance(query, str) or not query.strip():
        raise SearchError("the search query is empty; give a word to look for")
    terms = []
    for phrase, word in _TOKENS.findall(query):
        prefix = bool(word) and word.endswith("*")
        # A double quote is only ever syntax; a stray one (an unbalanced quote) is dropped.
        body = phrase if not word else word.rstrip("*").replace('"', "")
        if _HAS_WORD.search(body):
            terms.append(_Term(" ".join(body.split()), prefix))
    if not terms:
        raise SearchError(f"nothing to search for in {query.strip()!r}: give at least one word (letters or digits)")
    return terms


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """alembic autogenerate filter: the search index lives outside the models, so it is no difference."""
    if type_ == "table":
        return not (name == FTS_TABLE or (name or "").startswith(FTS_TABLE + "_"))
    if type_ == "index":
        return name != PG_INDEX
    return True


def search_turns(db: Session, *, query: str, session: str | None = None, limit: int = 20) -> list[Hit]:
    """Turns whose text matches query, newest first (turn time, then index), at most limit of them."""
    terms = parse_query(query)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise SearchError(f"the search limit must be a whole number of at least 1, not {limit!r}")
    dialect = db.get_bind().dialect.name
    if dialect == "sqlite" and _has_fts_table(db):
        search = _fts5
    elif dialect == "postgresql":
        search = _tsvector
    else:
        search = _like
    return search(db, terms, session, limit)


def _has_fts_table(db: Session) -> bool:
    found = db.execute(text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :n"), {"n": FTS_TABLE})
    return found.first() is not None


def _newest(stmt: Select, session: str | None, limit: int) -> Select:
    stmt = stmt.join(ChatSession, ChatSession.id == Turn.session_id)
    if session is not None:
        stmt = stmt.where(ChatSession.name == session)
    return stmt.order_by(Turn.created_at.desc(), Turn.index.desc(), Turn.id.desc()).limit(limit)


def _hit(name: str, index: int, created_at: datetime, user: str, reply: str) -> Hit:
    """A Hit from the two highlighted texts: the user's snippet when it matched, else the reply's."""
    in_user, in_reply = _OPEN in user, _OPEN in reply
    matched = "both" if in_user == in_reply else "user" if in_user else "reply"
    snippet = user if in_user or not in_reply else reply
    snippet = " ".join(snippet.replace(_OPEN, "[").replace(_CLOSE, "]").split())
    return Hit(session=name, turn=index, created_at=created_at, snippet=snippet, matched=matched)


# --- SQLite: FTS5 ------------------------------------------------------------------------------------


def _fts5_query(terms: list[_Term]) -> str:
    # Every term a quoted FTS5 string (its own tokenizer splits it), so no text is FTS5 syntax.
    return " ".join('"' + t.text.replace('"', '""') + '"' + ("*" if t.prefix else "") for t in terms)


def _fts5(db: Session, terms: list[_Term], session: str | None, limit: int) -> list[Hit]:
    fts = table(FTS_TABLE, column("rowid"))
    fts_ref = literal_column(FTS_TABLE)
    snippets = [func.snippet(fts_ref, col, _OPEN, _CLOSE, "…", _SNIPPET_TOKENS) for col in (0, 1)]
    stmt = (select(ChatSession.name, Turn.index, Turn.created_at, *snippets)
            .select_from(fts).join(Turn, Turn.id == fts.c.rowid)
            .where(fts_ref.match(_fts5_query(terms))))
    return [_hit(*row) for row in db.execute(_newest(stmt, session, limit))]


# --- PostgreSQL: tsvector ----------------------------------------------------------------------------


def _pg_term(term: _Term):
    # phraseto_tsquery runs the parser to_tsvector ran, so a term splits the way the text did.
    q = func.phraseto_tsquery(_PG_CONFIG, term.text)
    if not term.prefix:
        return q
    # 'cat' -> 'cat':* (the last word of a phrase becomes a prefix); an empty query has no word to mark.
    return case((func.numnode(q) > 0, cast(cast(q, String) + ":*", TSQUERY)), else_=q)


def _tsvector(db: Session, terms: list[_Term], session: str | None, limit: int) -> list[Hit]:
    query = _pg_term(terms[0])
    for term in terms[1:]:
        query = query.op("&&")(_pg_term(term))
    options = (f"StartSel={_OPEN}, StopSel={_CLOSE}, MaxWords={_SNIPPET_TOKENS}, MinWords=4, ShortWord=0, "
               "MaxFragments=1, FragmentDelimiter=…")
    heads = [func.ts_headline(_PG_CONFIG, col, query, options) for col in (Turn.user_text, Turn.reply_text)]
    stmt = (select(ChatSession.name, Turn.index, Turn.created_at, *heads)
            .select_from(Turn).where(literal_column(_PG_DOCUMENT).op("@@")(query)))
    return [_hit(*row) for row in db.execute(_newest(stmt, session, limit))]


# --- anything else: LIKE -----------------------------------------------------------------------------


def _like_pattern(term: _Term) -> str:
    escaped = term.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _marked(text_: str, terms: list[_Term]) -> str:
    """A window around the first match of any term, that match marked; text_ unchanged if none."""
    found = [m for t in terms if (m := re.search(re.escape(t.text), text_, re.IGNORECASE))]
    if not found:
        return text_
    first = min(found, key=lambda m: m.start())
    start, end = max(0, first.start() - _WINDOW), min(len(text_), first.end() + _WINDOW)
    return ("…" if start else "") + text_[start:first.start()] + _OPEN + first.group() + _CLOSE + \
        text_[first.end():end] + ("…" if end < len(text_) else "")


def _like(db: Session, terms: list[_Term], session: str | None, limit: int) -> list[Hit]:
    # Substrings, so a word also finds longer words (the fallback has no tokenizer to say otherwise).
    each = [or_(Turn.user_text.ilike(p, escape="\\"), Turn.reply_text.ilike(p, escape="\\"))
            for p in map(_like_pattern, terms)]
    stmt = (select(ChatSession.name, Turn.index, Turn.created_at, Turn.user_text, Turn.reply_text)
            .select_from(Turn).where(and_(*each)))
    return [_hit(name, index, created, _marked(user, terms), _marked(reply, terms))
            for name, index, created, user, reply in db.execute(_newest(stmt, session, limit))]
