"""The application clock and the ISO timestamp format shared with the original.

Timestamps are stored at millisecond precision as ``YYYY-MM-DDTHH:MM:SS.mmmZ``
(JavaScript's ``toISOString``), so that string comparison orders them in time.
Tests move time by patching :func:`now`; the testing kit
(:class:`openworkflow.testing.WorkflowEnvironment`) moves it with
:func:`set_offset`, which every reader of the engine's time sees.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_offset: timedelta | None = None
"""How far the engine's clock is ahead of the real one (None: not at all)."""


def now() -> datetime:
    """Return the engine's current UTC time truncated to whole milliseconds."""
    if _offset is None:
        return truncate_ms(datetime.now(UTC))
    return truncate_ms(datetime.now(UTC) + _offset)


def offset() -> timedelta | None:
    """How far :func:`now` runs ahead of the real time (None when it does not)."""
    return _offset


def set_offset(value: timedelta | None) -> None:
    """Run :func:`now` ``value`` ahead of the real time (None: back to real time).

    Process-wide; for the testing kit, which moves its event loop's clock along.
    """
    global _offset
    _offset = value


def truncate_ms(value: datetime) -> datetime:
    """Drop sub-millisecond precision, which the stored format cannot hold."""
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


def to_iso(value: datetime) -> str:
    """Format an aware datetime as ``2026-01-02T03:04:05.678Z``."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime")
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def to_iso_or_none(value: datetime | None) -> str | None:
    """Format like :func:`to_iso`, passing ``None`` through."""
    return None if value is None else to_iso(value)


def from_iso(text: str) -> datetime:
    """Parse a stored ISO timestamp into an aware UTC datetime."""
    return datetime.fromisoformat(text).astimezone(UTC)
