"""The application clock and the ISO timestamp format shared with the original.

Timestamps are stored at millisecond precision as ``YYYY-MM-DDTHH:MM:SS.mmmZ``
(JavaScript's ``toISOString``), so that string comparison orders them in time.
Tests move time by patching :func:`now`; the testing kit
(:class:`openworkflow.testing.WorkflowEnvironment`) moves it with
:func:`set_offset`, which every reader of the engine's time sees.

On PostgreSQL the database's clock rules (leases, claims and due times are
compared with its ``NOW()``), so a worker runs its claim loop and its passes in
a context where :func:`now` is corrected by its estimate of how far the
database's clock is from its own (:func:`corrected_context`): the due times it
writes (a sleep's wake-up, a retry's backoff, a wait's timeout) are then
database times, whatever its own clock says. Everything else (clients, SQLite
workers, whose own clock rules) reads the uncorrected engine clock.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

_offset: timedelta | None = None
"""How far the engine's clock is ahead of the real one (None: not at all)."""

_correction: contextvars.ContextVar[Callable[[], timedelta] | None] = contextvars.ContextVar(
    "openworkflow_clock_correction", default=None
)
"""In a worker's tasks on PostgreSQL: how far the database's clock is ahead of the engine's."""


def now() -> datetime:
    """Return the engine's current UTC time truncated to whole milliseconds.

    In a context made by :func:`corrected_context`, the database's time as
    the correction estimates it.
    """
    correction = _correction.get()
    if correction is None:
        return truncate_ms(_local_now())
    return truncate_ms(_local_now() + correction())


_UNPATCHED_NOW = now


def reads_precisely() -> bool:
    """Whether the precise readings are to the microsecond: not while a test patches :func:`now`.

    Tests move the engine's clock by patching :func:`now`; the precise
    readings then follow it, truncated to the millisecond like it.
    """
    return now is _UNPATCHED_NOW


def precise_now() -> datetime:
    """:func:`now` to the microsecond: how long to wait for a due time, to the microsecond."""
    if not reads_precisely():
        return now()
    correction = _correction.get()
    if correction is None:
        return _local_now()
    return _local_now() + correction()


def _local_now() -> datetime:
    """The engine's own clock, not corrected and not truncated."""
    if _offset is None:
        return datetime.now(UTC)
    return datetime.now(UTC) + _offset


def uncorrected_now() -> datetime:
    """:func:`now` as it reads outside a worker's corrected context (to time a round trip).

    Read through :func:`now` itself, so a test that moves the engine's clock
    by patching it moves this reading too.
    """
    token = _correction.set(None)
    try:
        return now()
    finally:
        _correction.reset(token)


def precise_uncorrected_now() -> datetime:
    """The engine's own clock to the microsecond, not corrected: to time a round trip.

    A worker's estimate of the database's clock compares it with ``NOW()``
    stamps to the microsecond; a truncated reading would widen the estimate
    by up to a millisecond on each side.
    """
    if not reads_precisely():
        return uncorrected_now()
    return _local_now()


def corrected_context(correction: Callable[[], timedelta]) -> contextvars.Context:
    """A copy of the current context in which :func:`now` adds ``correction()``.

    For the tasks of a worker whose database's clock rules (one copy per task:
    a context cannot run in two tasks at once). ``correction`` is called at
    every reading, so an estimate that improves is seen at once.
    """
    context = contextvars.copy_context()
    context.run(_correction.set, correction)
    return context


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
