"""How an idle worker waits between claims: until work may be there, and no longer.

A worker with free slots and nothing to claim waits until the earliest of a
wake-up (a notification from this process, LISTEN/NOTIFY or SQLite's
``data_version``), the moment the next parked run comes due (asked of the
backend after each empty claim, see :mod:`openworkflow.core.next_due`), one
of its own passes ending (it may have parked a run that comes due sooner
than known), and a poll backoff growing from 100 ms to :data:`SAFETY_POLL_S`
(in case a wake-up was lost). So a durable sleep or a retry backoff resumes
within milliseconds of its due time while an idle worker queries rarely.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from openworkflow.core.next_due import NextDueReader
from openworkflow.notifications import ChangeNotifier

logger = logging.getLogger("openworkflow.worker")

POLL_INITIAL_MS = 100.0
POLL_MAX_MS = 1000.0

SAFETY_POLL_S = 5.0
"""Longest an idle worker waits with no wake-up and no run known to come due. (Every
new run, due now or later, sends a notification, and a worker learns of the runs its
own passes park, so this only bounds how late a lost wake-up is noticed.)"""

DUE_MARGIN_S = 0.001
"""Waking a hair after the due time, so the claim's ``available_at <= now`` holds."""


def poll_backoff_ms(empty_polls: int, cap_ms: float = POLL_MAX_MS) -> float:
    """Idle wait after ``empty_polls`` empty claims: 100 ms doubling to ``cap_ms``, jittered."""
    # The exponent is capped: 2 ** 1024 is past a float, and an idle worker counts
    # empty polls for as long as it stays idle (~17 min at 1 s each).
    doublings = min(max(0, empty_polls - 1), 16)
    capped = min(POLL_INITIAL_MS * 2**doublings, cap_ms)
    return float(max(1.0, capped * random.uniform(0.5, 1.0)))


class IdleWait:
    """The claim loop's waits: :meth:`begin` before each claim, :meth:`wait` after it."""

    def __init__(self, backend: object, notifier: ChangeNotifier | None) -> None:
        self._reader = backend if isinstance(backend, NextDueReader) else None
        self._notifier = notifier
        self._poked = asyncio.Event()
        self._due_at: float | None = None  # event loop time of the last due time read
        self._due_stale = True  # a pass ended since: it may have parked a run

    def begin(self) -> None:
        """A claim starts: a pass ending from now on cuts the next wait short."""
        self._poked.clear()

    def poke(self) -> None:
        """A pass ended: it may have parked a run that comes due before the known time."""
        self._poked.set()
        self._due_stale = True

    async def next_due_s(self) -> float | None:
        """Seconds until the next parked run comes due (None: unknown or none)."""
        if self._reader is None:
            return None
        try:
            return await self._reader.next_due_in_s()
        except Exception as error:  # the safety poll covers it
            logger.debug("Could not read the next due time: %s", error)
            return None

    async def wait(self, empty_polls: int, *, read_due: bool = True) -> None:
        """Wait after a claim that left slots free (``empty_polls`` in a row found nothing).

        ``read_due``: ask the backend for the next due time first (else reuse
        the last one read, unless a pass ended since: a claim that found runs
        does not pay another query).
        """
        loop = asyncio.get_running_loop()
        if read_due or self._due_stale:
            self._due_stale = False
            due = await self.next_due_s()
            self._due_at = None if due is None else loop.time() + due
        delay = poll_backoff_ms(empty_polls, SAFETY_POLL_S * 1000) / 1000
        if self._due_at is not None and self._due_at > loop.time():
            delay = min(delay, self._due_at - loop.time() + DUE_MARGIN_S)
        await self.sleep(delay)

    async def sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or until a wake-up or a :meth:`poke`."""
        if self._poked.is_set():
            return
        notifier = self._notifier
        work = asyncio.ensure_future(
            notifier.wait_for_work(delay) if notifier is not None else asyncio.sleep(delay)
        )
        poked = asyncio.ensure_future(self._poked.wait())
        try:
            await asyncio.wait({work, poked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, poked):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(work, poked, return_exceptions=True)
