"""Exceptions the store raises; callers catch StoreError to report any of them."""

from __future__ import annotations


class StoreError(Exception):
    """Base class: something about the saved conversation memory went wrong."""


class CorruptEngramError(StoreError):
    """A stored engram failed verification; the message names session, cycle and reason."""


class StaleSessionError(StoreError):
    """Another process committed a turn to this session after we read it."""


class SessionNameError(StoreError, ValueError):
    """A session name was rejected; the message says why in one line."""


class SchemaTooNewError(StoreError):
    """The database was written by a newer Companion than this one."""


class SearchError(StoreError, ValueError):
    """A search was refused (an empty query, no words in it, a bad limit); the message says why in one line."""
