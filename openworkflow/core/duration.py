"""Durations: ``timedelta``, seconds, or the original's strings (``"5m"``, ``"500ms"``)."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import TypeAlias

from openworkflow.core import clock
from openworkflow.errors import InvalidDurationError

Duration: TypeAlias = timedelta | int | float | str
"""A ``timedelta``, seconds, or a string like ``"30s"`` (a bare number string is ms)."""

_SECOND = 1000.0
_MINUTE = 60 * _SECOND
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR
_WEEK = 7 * _DAY
_MONTH = 2_629_800_000.0  # 365.25 days / 12, so twelve months make a year
_YEAR = 31_557_600_000.0

_UNIT_MS: dict[str, float] = {
    **dict.fromkeys(("millisecond", "milliseconds", "msec", "msecs", "ms"), 1.0),
    **dict.fromkeys(("second", "seconds", "sec", "secs", "s"), _SECOND),
    **dict.fromkeys(("minute", "minutes", "min", "mins", "m"), _MINUTE),
    **dict.fromkeys(("hour", "hours", "hr", "hrs", "h"), _HOUR),
    **dict.fromkeys(("day", "days", "d"), _DAY),
    **dict.fromkeys(("week", "weeks", "w"), _WEEK),
    **dict.fromkeys(("month", "months", "mo"), _MONTH),
    **dict.fromkeys(("year", "years", "yr", "yrs", "y"), _YEAR),
}

_PATTERN = re.compile(r"^(-?\.?\d+(?:\.\d+)?)\s*([a-z]+)?$", re.IGNORECASE)


def parse_duration_ms(value: Duration) -> float:
    """Return the duration in milliseconds, or raise :class:`InvalidDurationError`."""
    if isinstance(value, timedelta):
        return value.total_seconds() * 1000.0
    if isinstance(value, bool):
        raise InvalidDurationError(f"invalid duration {value!r}: expected a number, not a bool")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise InvalidDurationError(f"invalid duration {value!r}: must be finite")
        return float(value) * 1000.0
    if not isinstance(value, str):
        raise InvalidDurationError(
            f"invalid duration {value!r}: expected a timedelta, seconds or a string like '5m'"
        )
    match = _PATTERN.match(value)
    if not match:
        raise InvalidDurationError(
            f'invalid duration "{value}": use a number and a unit such as "500ms", "30s", "5m", '
            '"1h", "7d", "2w", "1mo" or "1y"'
        )
    unit = (match.group(2) or "ms").lower()
    if unit not in _UNIT_MS:
        raise InvalidDurationError(
            f'invalid duration "{value}": unknown unit "{match.group(2)}" '
            "(use ms, s, m, h, d, w, mo or y)"
        )
    return float(match.group(1)) * _UNIT_MS[unit]


_BARE_NUMBER = re.compile(r"^\s*\d+(?:\.\d+)?\s*$")


def setting_duration(value: str | float) -> str | float:
    """A duration read from a setting (environment, ``.env``, config file), checked.

    In settings a bare number is seconds, as a number is in the Python API:
    ``OPENWORKFLOW_WORKER_LEASE_DURATION=10`` is ten seconds, not ten
    milliseconds. Other strings keep their unit (``"500ms"``, ``"30s"``).

    Raises:
        InvalidDurationError: the value is not a duration.
    """
    if isinstance(value, str) and _BARE_NUMBER.match(value):
        value = float(value)
    parse_duration_ms(value)
    return value


def parse_duration(value: Duration) -> timedelta:
    """Return the duration as a ``timedelta``."""
    return timedelta(milliseconds=parse_duration_ms(value))


def resolve_time(value: datetime | Duration, *, base: datetime | None = None) -> datetime:
    """Turn an absolute time or a duration from ``base`` (default now) into a datetime."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidDurationError(
                f"naive datetime {value!r}: pass a timezone-aware datetime (e.g. tzinfo=UTC)"
            )
        return clock.truncate_ms(value)
    start = base if base is not None else clock.now()
    return clock.truncate_ms(start + parse_duration(value))
