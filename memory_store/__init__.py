"""Persistent conversation memory for Companion: sessions, turns and engrams."""

from importlib import import_module

# Resolved on first use (PEP 562): `companion _sessions` (memory_store.names), which shell completion
# runs at every Tab, needs SQLAlchemy alone, and crud and codec import torch.
_WHERE = {
    "Base": "memory_store.models",
    "ChatSession": "memory_store.models",
    "CorruptEngramError": "memory_store.errors",
    "Engram": "memory_store.models",
    "Hit": "memory_store.search",
    "SchemaTooNewError": "memory_store.errors",
    "SearchError": "memory_store.errors",
    "SessionNameError": "memory_store.errors",
    "SessionSummary": "memory_store.crud",
    "StaleSessionError": "memory_store.errors",
    "Store": "memory_store.db",
    "StoreError": "memory_store.errors",
    "SystemPrompt": "memory_store.models",
    "Turn": "memory_store.models",
    "add_turn": "memory_store.crud",
    "create_session": "memory_store.crud",
    "decode_engram": "memory_store.codec",
    "delete_session": "memory_store.crud",
    "encode_engram": "memory_store.codec",
    "engram_rows": "memory_store.crud",
    "get_session": "memory_store.crud",
    "latest_engram": "memory_store.crud",
    "list_sessions": "memory_store.crud",
    "load_engram": "memory_store.crud",
    "open_store": "memory_store.db",
    "search_turns": "memory_store.search",
    "touch": "memory_store.crud",
    "turns": "memory_store.crud",
    "validate_session_name": "memory_store.crud",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'memory_store' has no attribute {name!r}")
    return getattr(import_module(_WHERE[name]), name)
