"""Persistent conversation memory for Companion: sessions, turns and engrams."""

from memory_store.codec import decode_engram, encode_engram
from memory_store.crud import (
    SessionSummary,
    add_turn,
    create_session,
    delete_session,
    engram_rows,
    get_session,
    latest_engram,
    list_sessions,
    load_engram,
    touch,
    turns,
    validate_session_name,
)
from memory_store.db import Store, open_store
from memory_store.errors import (
    CorruptEngramError,
    SchemaTooNewError,
    SearchError,
    SessionNameError,
    StaleSessionError,
    StoreError,
)
from memory_store.models import Base, ChatSession, Engram, SystemPrompt, Turn
from memory_store.search import Hit, search_turns

__all__ = [
    "Base",
    "ChatSession",
    "CorruptEngramError",
    "Engram",
    "Hit",
    "SchemaTooNewError",
    "SearchError",
    "SessionNameError",
    "SessionSummary",
    "StaleSessionError",
    "Store",
    "StoreError",
    "SystemPrompt",
    "Turn",
    "add_turn",
    "create_session",
    "decode_engram",
    "delete_session",
    "encode_engram",
    "engram_rows",
    "get_session",
    "latest_engram",
    "list_sessions",
    "load_engram",
    "open_store",
    "search_turns",
    "touch",
    "turns",
    "validate_session_name",
]
