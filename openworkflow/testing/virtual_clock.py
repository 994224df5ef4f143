"""The clock a :class:`~openworkflow.testing.WorkflowEnvironment` moves.

The engine reads time in two places: :func:`openworkflow.core.clock.now`
(every stored timestamp, due time, deadline and lease, the SQLite backend's
``now`` included) and its event loop's ``time()`` (worker polls, lease
heartbeats, step timeouts, result waits). A :class:`VirtualClock` runs both
ahead of the real time by the same offset, so moving it by an hour is seen
alike by a sleeping run, a step's timeout and the worker that wakes them.
PostgreSQL reads its own ``NOW()``, so only backends that take their time
from the engine (SQLite) can have their clock moved.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from openworkflow.core import clock


class VirtualClock:
    """The engine's clock and one event loop's clock, moved forward together."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        if clock.offset() is not None:
            raise RuntimeError(
                "another WorkflowEnvironment already moves the engine's clock in this process; "
                "use one environment at a time (nest them in sequence, not together)"
            )
        self._loop = loop
        self._real_time = loop.time
        self._offset_s = 0.0
        loop.time = self._time  # type: ignore[method-assign]
        clock.set_offset(timedelta(0))

    @property
    def offset(self) -> timedelta:
        """How far ahead of the real time the clock runs."""
        return timedelta(seconds=self._offset_s)

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward (timers due by then fire at the loop's next turn)."""
        if seconds < 0:
            raise ValueError(f"the clock only moves forward, not by {seconds!r} s")
        self._offset_s += seconds
        clock.set_offset(timedelta(seconds=self._offset_s))

    def close(self) -> None:
        """Give the loop and the engine the real time back."""
        vars(self._loop).pop("time", None)  # the class's time() again
        clock.set_offset(None)

    def _time(self) -> float:
        return self._real_time() + self._offset_s
