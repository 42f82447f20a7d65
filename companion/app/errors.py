"""The error the service raises for a refusal the user can act on."""

from __future__ import annotations


class CompanionError(Exception):
    """A refusal the user can act on; the message is one line and says how."""
