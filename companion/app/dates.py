"""Dates in words, as a person says them: "just now", "5 minutes ago", "yesterday", "3 days ago".

    >>> from datetime import datetime, timedelta, UTC
    >>> now = datetime(2026, 3, 10, 12, tzinfo=UTC)
    >>> ago(now - timedelta(days=3), now)
    '3 days ago'

Pure when the caller passes `now`, so the answers can be tested exactly.
Under an hour counts minutes; under 12 hours, or earlier the same day, hours;
beyond that calendar days in `now`'s time zone ("yesterday" is the day before
`now`'s date, even if only 13 hours ago), then weeks, months (30 days), years.
"""

from __future__ import annotations

from datetime import UTC, datetime


def _aware(t: datetime | str) -> datetime:
    t = datetime.fromisoformat(t) if isinstance(t, str) else t
    # The store hands back aware UTC; a naive value can only mean UTC too.
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}{'' if n == 1 else 's'} ago"


def ago(then: datetime | str, now: datetime | str | None = None) -> str:
    """How long before `now` (default: the current local time) `then` was, in words."""
    then = _aware(then)
    now = _aware(now) if now is not None else datetime.now().astimezone()
    seconds = (now - then).total_seconds()
    if seconds < 60:
        # A clock slightly ahead on the machine that wrote it still means "just now".
        return "just now" if seconds > -300 else "in the future"
    if seconds < 3600:
        return _plural(int(seconds // 60), "minute")
    days = (now.date() - then.astimezone(now.tzinfo).date()).days
    if seconds < 12 * 3600 or days == 0:
        return _plural(int(seconds // 3600), "hour")
    if days == 1:
        return "yesterday"
    if days < 14:
        return _plural(days, "day")
    if days < 60:
        return _plural(days // 7, "week")
    if days < 365:
        return _plural(days // 30, "month")
    return _plural(days // 365, "year")
