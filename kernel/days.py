"""Calendar days, the unit of every partition: ranges and the windows that end on a day."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def day_range(first: date, last: date) -> list[date]:
    """Every day from `first` to `last`, both included."""
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


def window_ending(day: date, days: int) -> list[date]:
    """The `days` days that end on `day` (it included), oldest first: a look-back or a training window."""
    return day_range(day - timedelta(days=days - 1), day)


def hours_in_day(day: date, zone: str) -> int:
    """Hours from local midnight to the next in an IANA time zone: 24, or 23/25 on a DST change."""
    start = datetime.combine(day, time(), ZoneInfo(zone)).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(), ZoneInfo(zone)).astimezone(UTC)
    return round((end - start) / timedelta(hours=1))
