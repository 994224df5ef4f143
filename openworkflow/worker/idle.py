"""How a worker with free slots waits between claims: until work may be there, and no longer.

After a claim that left slots free, the worker waits until the earliest of:

* a wake-up (this process's writes, PostgreSQL's LISTEN/NOTIFY, SQLite's
  ``data_version`` watcher): a run may be due now, or due later;
* the moment a run it knows of comes due. It knows every run its own passes
  park from the write that parked it (:meth:`IdleWait.pass_ended`): a durable
  sleep, a retry backoff, a wait's timeout. Nothing it parks hangs on a
  database read racing that write. Runs parked by others (or an expiring
  lease) it learns by asking the backend after a wake-up, after being busy
  (every slot taken: it watched for nothing) and at the safety poll
  (:class:`~openworkflow.core.next_due.NextDueReader`), one read at a time;
* a poll backoff from 100 ms growing to :data:`SAFETY_POLL_S`, in case a
  wake-up was lost. It also bounds how late a run parked by a worker that
  then died or stayed busy is resumed, as parks due later send no wake-up.

Races closed on purpose (a missed due time is far worse than a late one,
so when in doubt the worker claims again):

* a wake-up sent while a claim runs (a run committed after the claim's
  snapshot): the worker watches from before each claim (:meth:`IdleWait.begin`),
  not only while it sleeps, so the wait after the claim ends at once;
* a pass of its own ending while a claim runs, its run due before that claim
  began: the claim may have missed the write, and the instant would look
  covered by it, so the worker claims again at once;
* a read of the next due time looks back to the claim it follows, so a run
  that came due between that claim's snapshot and the read is reported.

A pass of its own that ends with a nearer due time shortens a wait under way.
Known instants are wall-clock times (as stored), re-read at least every
:data:`CLOCK_CHECK_S`, so a clock set forward (or moved by a test) is seen.
On PostgreSQL they are the database's times, and so is ``clock.now()`` in
the claim loop (:mod:`openworkflow.worker.db_clock`): a worker whose clock is
off still wakes when the database says a run is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from openworkflow.core import clock
from openworkflow.core.next_due import DueTimes, NextDueReader
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.event_loop import cancel_and_wait
from openworkflow.notifications import ChangeNotifier

logger = logging.getLogger("openworkflow.worker")

POLL_INITIAL_MS = 100.0
POLL_MAX_MS = 1000.0
JITTER_MAX_MS = 1000.0

SAFETY_POLL_S = 10.0
"""Longest an idle worker waits with no wake-up and no known due time.

Every new run sends a wake-up (due now or later), and the worker knows the
runs its own passes park, so this only bounds how late a lost wake-up, or a
run parked by a worker that died, is noticed."""

DUE_MARGIN_S = 0.001
"""Waking a hair after the due time, so the claim's ``available_at <= now`` holds
(where the engine's clock is the database's; on PostgreSQL the estimate's
uncertainty is the margin)."""

CLOCK_CHECK_S = 1.0
"""Longest single sleep towards a known due time: then the wall clock is read again."""

DUE_READ_SPACING_S = 0.01
"""Fewest seconds between two reads of the next due time. Wake-ups come in bursts
(a client starting runs); one read at a time, the next at most this soon after the
last began, so a delayed start in a burst is learnt of within milliseconds."""


def poll_backoff_ms(empty_polls: int, cap_ms: float = POLL_MAX_MS) -> float:
    """Idle wait after ``empty_polls`` empty claims: 100 ms doubling to ``cap_ms``, jittered."""
    # The exponent is capped: 2 ** 1024 is past a float, and an idle worker counts
    # empty polls for as long as it stays idle (~17 min at 1 s each).
    doublings = min(max(0, empty_polls - 1), 16)
    capped = min(POLL_INITIAL_MS * 2**doublings, cap_ms)
    # Jittered down by up to half, and by at most a second: enough to spread
    # workers apart, while a 10 s safety poll stays near 10 s (at 5-10 s it
    # cost an idle worker a third more queries).
    low = max(capped / 2, capped - JITTER_MAX_MS)
    return float(max(1.0, random.uniform(low, capped)))


def due_after_pass(written: WorkflowRun | None) -> tuple[bool, datetime | None]:
    """What a pass's last write says about its run: (known, due at).

    ``(True, None)``: the run finished, nothing comes due. ``(True, at)``: it
    waits and comes due at ``at``. ``(False, None)``: unknown (no write, or a
    write that did not say), so the backend is asked after the next claim.
    """
    if written is None:
        return False, None
    if written.is_terminal:
        return True, None
    if written.worker_id is not None or written.available_at is None:
        return False, None  # still leased (a write of another kind): ask
    return True, written.available_at


class IdleWait:
    """The claim loop's waits: :meth:`begin` before each claim, :meth:`wait` after it."""

    def __init__(
        self,
        backend: object,
        notifier: ChangeNotifier | None,
        clock_uncertainty: Callable[[], timedelta] | None = None,
    ) -> None:
        self._reader = backend if isinstance(backend, NextDueReader) else None
        # On PostgreSQL clock.now() is the database's time estimated late (see
        # db_clock): a wait for a known instant adds how early it may really be.
        self._clock_uncertainty = clock_uncertainty
        self._notifier = notifier
        self._due = DueTimes()
        self._changed = asyncio.Event()  # a pass ended: recompute the wait (or end it)
        self._read_wanted = True  # the backend may know of a due time this worker does not
        self._claim_wanted = False  # a pass ended without saying when its run is due
        self._last_read = float("-inf")  # loop time of the last read of the next due time
        self._claim_started = clock.now()
        self._claim_started_at: float | None = None  # loop time, for the read's look-back
        self._claimed: set[str] = set()
        self._claiming = False  # between begin() and wait(): a claim may be under way
        self._sleeping_until: datetime | None = None  # the known instant the wait aims at
        # Watched from before each claim until the wait after it ends: a wake-up
        # sent while the claim runs (a run committed after the claim's snapshot)
        # must end the wait, not be lost for want of a waiter.
        self._work: asyncio.Future[None] | None = None
        # A read runs beside the wait, so a slow database never delays a known due time.
        self._reading: asyncio.Task[None] | None = None
        if notifier is not None:  # another worker parked a run: its due time is news
            notifier.watch_due_later(self._parked_elsewhere)

    async def stop(self) -> None:
        """Cancel a read under way (the worker stops)."""
        self._unwatch()
        if self._notifier is not None:
            self._notifier.unwatch_due_later(self._parked_elsewhere)
        await cancel_and_wait(self._reading)

    def _parked_elsewhere(self) -> None:
        """A run was parked until later (maybe by another worker): read the next due time."""
        self._read_wanted = True
        self._changed.set()

    def busy(self) -> None:
        """Every slot is taken: stop watching for work until the next :meth:`begin`.

        A watch costs SQLite's watcher thread frequent reads. The claim after
        a slot frees sees every run due by then; runs parked meanwhile by
        others, due later, only a read shows, so the next wait reads.
        """
        self._unwatch()
        self._read_wanted = True

    def _unwatch(self) -> None:
        if self._work is not None and self._notifier is not None:
            self._notifier.unwatch_work(self._work)
        self._work = None

    def begin(self) -> None:
        """A claim starts now: instants up to now are covered by it; wake-ups from now count."""
        self._unwatch()
        if self._notifier is not None:
            self._work = self._notifier.watch_work()
        self._claim_started = clock.now()
        self._claim_started_at = asyncio.get_running_loop().time()
        self._claimed.clear()
        self._claiming = True

    def claimed(self, run_id: str) -> None:
        """The worker took ``run_id`` (by a claim or a sweep): no wake-up needed for it."""
        self._claimed.add(run_id)
        self._due.forget(run_id)

    def pass_ended(self, run_id: str, written: WorkflowRun | None, *, started: bool) -> None:
        """A pass of this worker ended; ``written``: the run as its last write left it.

        ``started``: the workflow function ran (else the run was put back
        before it started: throttled, or of an unknown workflow, due later).
        """
        known, due_at = due_after_pass(written)
        if not known:
            # Ask the backend after a claim; claim at once if the run may be due now.
            self._read_wanted = True
            self._claim_wanted = self._claim_wanted or started
            self._changed.set()
            return
        if due_at is None:
            return
        if self._claiming and due_at <= self._claim_started:
            # Due before a claim that may have run before this write committed:
            # that claim did not see the run, and the instant would pass as
            # covered by it (nor would a read looking back to it report the
            # run). Claim again rather than miss it.
            self._claim_wanted = True
            self._changed.set()
            return
        self._due.add(due_at, run_id)
        if self._sleeping_until is None or due_at < self._sleeping_until:
            self._changed.set()

    async def wait(self, empty_polls: int) -> None:
        """Wait after a claim that left slots free (``empty_polls`` empty claims in a row)."""
        self._claiming = False
        self._settle_passed()
        loop = asyncio.get_running_loop()
        poll_at = loop.time() + poll_backoff_ms(empty_polls, SAFETY_POLL_S * 1000) / 1000
        while True:
            self._changed.clear()  # set again by a pass ending from here on
            if self._claim_wanted:
                self._claim_wanted = False
                return
            if self._work is not None and self._work.done():
                self._read_wanted = True  # something changed elsewhere: maybe a run due later
                return  # a wake-up since the claim began: claim again
            if self._read_wanted and self._reading is None:
                next_read = self._last_read + DUE_READ_SPACING_S
                if loop.time() >= next_read:
                    self._start_read()
            due = self._due.earliest()
            delay = poll_at - loop.time()
            if self._read_wanted and self._reading is None:  # spaced out: read when allowed
                delay = min(delay, self._last_read + DUE_READ_SPACING_S - loop.time())
            if due is not None:
                due_in = (due - clock.precise_now()).total_seconds() + self._margin_s()
                if due_in <= 0:
                    return
                delay = min(delay, due_in, CLOCK_CHECK_S)
            if loop.time() >= poll_at:
                self._read_wanted = True  # the safety poll: also look for lost due times
                return
            if delay > 0:
                await self._sleep(delay, due)  # a wake-up or a pass ending: see the top

    def _margin_s(self) -> float:
        """How long after a known due time the wait ends: the claim must find the run due."""
        if self._clock_uncertainty is None:
            return DUE_MARGIN_S
        # The corrected clock errs late by at most the uncertainty, to the
        # microsecond (db_clock): waiting that much longer than the due time,
        # the database's clock has reached it before the claim is even sent.
        return self._clock_uncertainty().total_seconds()

    def _settle_passed(self) -> None:
        """Drop the instants the claim covered; ask the backend if one was not claimed here.

        A run this worker parked and did not claim when due: another worker
        took it, or the database's clock lags this one. A due time the
        backend gave: the next one may be someone else's run.
        """
        for run_id in self._due.pop_through(self._claim_started):
            if run_id is None or run_id not in self._claimed:
                self._read_wanted = True

    def _start_read(self) -> None:
        """Ask the backend for the next due time in the background; the wait goes on."""
        self._read_wanted = False
        self._last_read = asyncio.get_running_loop().time()
        if self._reader is None:
            return
        self._reading = asyncio.create_task(self._read_next_due(self._reader))

    async def _read_next_due(self, reader: NextDueReader) -> None:
        """Ask when the next run comes due, looking back to the last claim; then re-plan."""
        started = self._claim_started_at
        looked_back = 0.0 if started is None else asyncio.get_running_loop().time() - started
        try:
            due_in = await reader.next_due_in_s(looked_back)
        except Exception as error:  # the safety poll covers it
            logger.debug("Could not read the next due time: %s", error)
            due_in = None
        finally:
            self._reading = None
        if due_in is not None:
            self._due.add(clock.precise_now() + timedelta(seconds=due_in))
            self._changed.set()

    async def _sleep(self, delay: float, aiming_at: datetime | None) -> None:
        """Sleep ``delay`` s, less if a wake-up comes or a pass ends."""
        self._sleeping_until = aiming_at
        changed = asyncio.ensure_future(self._changed.wait())
        waiting: set[asyncio.Future[Any]] = {changed}
        if self._work is not None:
            waiting.add(self._work)
        try:
            await asyncio.wait(waiting, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._sleeping_until = None
            changed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await changed
