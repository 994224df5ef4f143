"""A worker's estimate of the database's clock, from the timestamps its writes return.

On PostgreSQL every lease, claim and due time is compared with the
database's ``NOW()``. A worker whose own clock runs minutes ahead or behind
would otherwise write a durable sleep's wake-up (``now + duration``), a
retry's backoff or a wait's timeout that many minutes late or early. No
extra query is made: a claim and a lease renewal already return the run
stamped with the statement's ``NOW()`` (``updated_at``); timing the call on
the worker's own clock bounds the offset between the two clocks:

    updated_at - (clock when the reply came) <= offset <= updated_at - (clock when sent)

PostgreSQL gives both to the microsecond: ``NOW()`` as the statement began
(``stamped_at``) for the upper bound, and ``clock_timestamp()`` as the row
was returned (``returned_at``) for the lower one, so the two bounds are
apart by little more than the network's round trip, not the statement's time.

The correction is the smallest upper bound seen lately, so it errs late,
never early: a sleep computed with it never ends before its time by the
database's clock, and ends late by at most the tightest round trip seen
(milliseconds). Samples older than :data:`WINDOW_S` are dropped, so a
worker's clock set by NTP is followed within that window.

SQLite stamps times with each process's own clock: there the engine clock is
the database's, and no correction is made (:func:`stamps_database_time`).
"""

from __future__ import annotations

import contextvars
import time
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timedelta

from openworkflow.core import clock
from openworkflow.core.workflow_run import WorkflowRun

WINDOW_S = 60.0
"""Seconds a sample counts towards the estimate (the newest one always does)."""

MAX_SAMPLES = 64
"""Samples kept: enough for a tight round trip among them, cheap to scan."""

_STORED_PRECISION = timedelta(milliseconds=1)
"""A run's ``updated_at`` is truncated to the millisecond: the true one is up to 1 ms later."""


def stamps_database_time(backend: object) -> bool:
    """Whether ``backend`` stamps times with its database server's clock (PostgreSQL).

    Backends say so with a ``stamps_database_time = True`` attribute; without
    it (SQLite, test doubles) the engine's own clock is the database's.
    """
    return getattr(backend, "stamps_database_time", False) is True


class DatabaseClock:
    """How far the database's clock is ahead of this worker's (negative: behind)."""

    def __init__(self) -> None:
        # (monotonic time, upper bound, lower bound) of each sample.
        self._samples: deque[tuple[float, timedelta, timedelta]] = deque(maxlen=MAX_SAMPLES)
        self._upper: timedelta = timedelta(0)
        self._lower: timedelta = timedelta(0)

    def offset(self) -> timedelta:
        """The correction :func:`openworkflow.core.clock.now` adds: errs late, never early."""
        return self._upper

    def now(self) -> datetime:
        """The database's time as estimated (late by at most a round trip), in milliseconds."""
        return clock.truncate_ms(clock.uncorrected_now() + self._upper)

    def earliest_now(self) -> datetime:
        """The database's time estimated early: for a run handed back as due at once."""
        return clock.truncate_ms(clock.uncorrected_now() + self._lower)

    def uncertainty(self) -> timedelta:
        """How much earlier than :meth:`now` the database's time may be (about a round trip).

        A wait for a due time written in database time ends this much later
        than ``clock.now()`` says, so it never ends before the database agrees
        the run is due (a claim too early finds nothing, and the time is lost).
        """
        return self._upper - self._lower

    def context(self) -> contextvars.Context:
        """A context for one of the worker's tasks, where ``clock.now()`` is the database's."""
        return clock.corrected_context(self.offset)

    def observe(self, sent_at: datetime, runs: Sequence[WorkflowRun]) -> None:
        """Learn from runs a statement sent at ``sent_at`` (engine clock) stamped with ``NOW()``.

        ``sent_at`` is :func:`openworkflow.core.clock.precise_uncorrected_now`
        read just before the call; the reply's time is read here, so call
        this at once. The stamp is the runs' ``stamped_at`` (to the
        microsecond) where the backend gives it, else their ``updated_at``.
        A backend that also gives the runs' ``sent_at`` (the statement went
        out on its connection then) narrows the bounds: a wait for a pooled
        connection, or a busy event loop before it, is not taken for the way
        to the database (a worker's first claim opens a connection).
        """
        if not runs:
            return
        received_at = clock.precise_uncorrected_now()
        sent_at = max([sent_at, *(run.sent_at for run in runs if run.sent_at is not None)])
        started = [run.stamped_at for run in runs if run.stamped_at is not None]
        if len(started) == len(runs):
            # NOW() to the microsecond: the statement's start, after it was sent.
            stamped, late_by = min(started), timedelta(0)
        else:
            # Truncated to the millisecond: the true stamp is up to 1 ms later.
            stamped, late_by = min(run.updated_at for run in runs), _STORED_PRECISION
        # The latest database reading before the reply: as it left, when given
        # (the lower bound then spans only the way back, not the statement).
        returned = [run.returned_at for run in runs if run.returned_at is not None]
        last_read = max(returned, default=stamped)
        # Readings truncated like now() (a test patching it) may be up to 1 ms early.
        early_by = timedelta(0) if clock.reads_precisely() else _STORED_PRECISION
        upper = stamped + late_by - sent_at
        lower = last_read - early_by - received_at
        now = time.monotonic()
        self._samples.append((now, upper, lower))
        while len(self._samples) > 1 and self._samples[0][0] < now - WINDOW_S:
            self._samples.popleft()
        self._upper = min(sample[1] for sample in self._samples)
        # A clock stepped within the window can cross the bounds: never above the upper one.
        self._lower = min(max(sample[2] for sample in self._samples), self._upper)
