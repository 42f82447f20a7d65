"""Relative dates in words: known answers for a fixed `now`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from companion.app.dates import ago

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("delta", "words"),
    [
        (timedelta(seconds=0), "just now"),
        (timedelta(seconds=59), "just now"),
        (timedelta(seconds=-30), "just now"),  # a writer's clock a little ahead
        (timedelta(minutes=1), "1 minute ago"),
        (timedelta(minutes=59, seconds=59), "59 minutes ago"),
        (timedelta(hours=1), "1 hour ago"),
        (timedelta(hours=14, minutes=59), "14 hours ago"),  # 00:01 the same day
        (timedelta(hours=15, minutes=30), "yesterday"),  # 23:30 the day before
        (timedelta(days=1, hours=14), "yesterday"),
        (timedelta(days=1, hours=16), "2 days ago"),  # 23:00 two calendar days back
        (timedelta(days=3), "3 days ago"),
        (timedelta(days=13), "13 days ago"),
        (timedelta(days=14), "2 weeks ago"),
        (timedelta(days=59), "8 weeks ago"),
        (timedelta(days=60), "2 months ago"),
        (timedelta(days=364), "12 months ago"),
        (timedelta(days=365), "1 year ago"),
        (timedelta(days=800), "2 years ago"),
        (timedelta(hours=-2), "in the future"),
    ],
)
def test_known_answers(delta: timedelta, words: str) -> None:
    assert ago(NOW - delta, NOW) == words


def test_evening_seen_next_morning_within_twelve_hours_is_hours() -> None:
    now = datetime(2026, 3, 10, 8, 0, tzinfo=UTC)
    assert ago(datetime(2026, 3, 9, 23, 0, tzinfo=UTC), now) == "9 hours ago"
    assert ago(datetime(2026, 3, 9, 19, 0, tzinfo=UTC), now) == "yesterday"


def test_calendar_days_are_counted_in_nows_time_zone() -> None:
    tokyo = timezone(timedelta(hours=9))
    then = datetime(2026, 3, 9, 16, 0, tzinfo=UTC)  # 01:00 on the 10th in Tokyo
    now = datetime(2026, 3, 10, 5, 0, tzinfo=UTC)  # 14:00 on the 10th in Tokyo, 13 hours later
    assert ago(then, now.astimezone(tokyo)) == "13 hours ago"  # the same day in Tokyo
    assert ago(then, now) == "yesterday"  # the day before in UTC


def test_iso_strings_and_naive_values_mean_utc() -> None:
    assert ago("2026-03-07T15:00:00+00:00", NOW) == "3 days ago"
    assert ago(datetime(2026, 3, 10, 14, 0), NOW) == "1 hour ago"
