"""Calendar days, the unit of every partition: ranges and the windows that end on a day."""

from __future__ import annotations

from datetime import date, timedelta


def day_range(first: date, last: date) -> list[date]:
    """Every day from `first` to `last`, both included."""
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


def window_ending(day: date, days: int) -> list[date]:
    """The `days` days that end on `day` (it included), oldest first: a look-back or a training window."""
    return day_range(day - timedelta(days=days - 1), day)
