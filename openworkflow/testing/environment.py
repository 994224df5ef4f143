"""``WorkflowEnvironment``: run workflows in a test, with time that skips ahead.

An environment is a backend (SQLite in memory unless one is passed), a
client and a worker in this process, and a clock it can move
(:mod:`openworkflow.testing.virtual_clock`). With time skipping on, whenever
the test waits for a run (:meth:`WorkflowEnvironment.run`,
:meth:`WorkflowEnvironment.result`) and every run is parked, the clock jumps
to the next time something is due (a sleep's end, a retry's backoff, a
signal-wait or child timeout, a deadline, a schedule's tick), so a workflow
that sleeps for 30 days completes in milliseconds. Time never jumps while
the test is not waiting, so a test can start a run, see it wait for a signal
and send one before the wait's timeout. :meth:`WorkflowEnvironment.advance`
moves the clock by hand (also with time skipping off).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from datetime import datetime
from types import TracebackType
from typing import Any

from openworkflow.client import OpenWorkflow, RunHandle
from openworkflow.core import clock
from openworkflow.core.backend import Backend
from openworkflow.core.duration import Duration, parse_duration_ms
from openworkflow.core.workflow_definition import Workflow, WorkflowRef
from openworkflow.errors import ResultTimeoutError, WorkflowRunNotFoundError
from openworkflow.notifications import notifier_of
from openworkflow.sqlite import SqliteBackend
from openworkflow.testing.due_times import next_due_time
from openworkflow.testing.virtual_clock import VirtualClock
from openworkflow.worker.worker import Worker

TEST_LEASE_DURATION = "3650d"
"""The environment's worker leases: a clock moved by hand while a step runs must
not expire the lease of a worker that is alive (nothing crashes in here)."""

_WAIT_S = 0.005
"""How often a result wait looks at its run and at whether time may skip."""


class WorkflowEnvironment:
    """A backend, a client and a worker in this process, on a clock the test moves.

    Example::

        async with WorkflowEnvironment(workflows=[send_reminder]) as env:
            assert await env.run(send_reminder, {"days": 30}) == "sent"

    Args:
        workflows: The workflows the environment's worker runs.
        time_skipping: Jump the clock to the next due time whenever the test
            waits for a run and every run is parked.
        backend: Where runs are stored; a fresh in-memory SQLite database by
            default (closed on exit; a backend passed in is left open). Moving
            the clock needs a backend that reads the engine's clock (SQLite):
            with PostgreSQL, which reads its own ``NOW()``, pass
            ``time_skipping=False`` and do not call :meth:`advance`.
        concurrency: The worker's slots.

    Attributes:
        client: An :class:`~openworkflow.OpenWorkflow` on the environment's backend.
        worker: The environment's :class:`~openworkflow.Worker` (started on entry).
        backend: The environment's backend.
    """

    def __init__(
        self,
        workflows: Iterable[Workflow],
        *,
        time_skipping: bool = True,
        backend: Backend | None = None,
        concurrency: int = 10,
    ) -> None:
        self._owns_backend = backend is None
        self.backend: Backend = backend if backend is not None else SqliteBackend(":memory:")
        self.time_skipping = time_skipping
        if time_skipping and not _reads_engine_clock(self.backend):
            raise ValueError(
                f"time skipping needs a backend that reads the engine's clock (SQLite); "
                f"{type(self.backend).__name__} reads the database server's clock: pass "
                "time_skipping=False, or leave backend unset for an in-memory SQLite database"
            )
        self.client = OpenWorkflow(self.backend)
        self.worker = Worker(
            self.backend,
            workflows,
            concurrency=concurrency,
            lease_duration=TEST_LEASE_DURATION,
        )
        self._clock: VirtualClock | None = None

    async def __aenter__(self) -> WorkflowEnvironment:
        if _reads_engine_clock(self.backend):
            self._clock = VirtualClock(asyncio.get_running_loop())
        try:
            await self.worker.start()
            # Store the schedules now: their first tick is the first after this.
            await self.worker.run_schedules()
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        try:
            await self.worker.stop()
        finally:
            try:
                if self._owns_backend:
                    await self.backend.stop()
            finally:
                if self._clock is not None:
                    self._clock.close()
                    self._clock = None

    def now(self) -> datetime:
        """The engine's current time (ahead of the real time by every skip and advance)."""
        return clock.now()

    async def advance(self, duration: Duration) -> None:
        """Move the clock forward by ``duration``; runs due by then start.

        Raises:
            RuntimeError: the backend reads its own clock (PostgreSQL).
        """
        if self._clock is None:
            raise RuntimeError(
                f"the clock of a {type(self.backend).__name__} cannot be moved: it reads the "
                "database server's time; use the default in-memory SQLite backend to advance time"
            )
        self._clock.advance(parse_duration_ms(duration) / 1000)
        await self._wake_worker()

    async def start(self, workflow: WorkflowRef, input: Any = None, **options: Any) -> RunHandle:
        """Start a run (:meth:`OpenWorkflow.run` with the same options) without waiting."""
        return await self.client.run(workflow, input, **options)

    async def run(self, workflow: WorkflowRef, input: Any = None, **options: Any) -> Any:
        """Start a run and return its output, skipping time while it waits (see :meth:`result`).

        Raises:
            WorkflowFailedError: the run failed (its error attached).
            WorkflowCanceledError: the run was canceled.
        """
        return await self.result(await self.start(workflow, input, **options))

    async def result(self, run: RunHandle | str, *, timeout: Duration | None = "1m") -> Any:
        """Wait for a run to finish and return its output (following ``continue_as_new``).

        With time skipping, the clock jumps whenever every run is parked.
        ``timeout`` is real time (a guard against a test that would hang).

        Raises:
            ResultTimeoutError: the run did not finish within ``timeout``.
            WorkflowFailedError: the run failed (its error attached).
            WorkflowCanceledError: the run was canceled.
        """
        run_id = run if isinstance(run, str) else run.id
        deadline = None if timeout is None else time.monotonic() + parse_duration_ms(timeout) / 1000
        notifier = notifier_of(self.backend)
        while True:
            current = await self.client.get_run(run_id)
            if current is None:
                raise WorkflowRunNotFoundError(run_id)
            if current.is_terminal:
                if current.continued_as_id is not None:
                    run_id = current.continued_as_id
                    continue
                return await self.client.handle(run_id).result(timeout=None)
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeoutError(
                    f"workflow run {run_id} did not finish within {timeout} of real time",
                    workflow_run_id=run_id,
                )
            if self.time_skipping and await self._skip_if_idle():
                continue
            if notifier is not None:
                await notifier.wait_for_run(run_id, _WAIT_S)
            else:
                await asyncio.sleep(_WAIT_S)

    async def _skip_if_idle(self) -> bool:
        """Jump to the next due time if every run is parked; whether the clock moved."""
        if not await self._idle():
            return False
        due = await next_due_time(self.backend, self.worker, clock.now())
        if due is None or self._clock is None:
            return False  # nothing will ever come due: the wait runs into its timeout
        self._clock.advance(max(0.0, (due - clock.now()).total_seconds()))
        await self._wake_worker()
        return True

    async def _idle(self) -> bool:
        """Whether every run is parked: the worker runs none, and none due now can be claimed.

        (A parked run keeps status ``running`` without a lease, as in the
        original, so the worker's slots, not the statuses, tell who runs.)
        """
        if self.worker.active_run_ids:
            return False
        # Anything due now goes to the worker first (under its claim lock).
        claimed = await self.worker.tick()
        return claimed == 0 and not self.worker.active_run_ids

    async def _wake_worker(self) -> None:
        """Serve schedule ticks due at the new time, then let the worker claim what is due."""
        await self.worker.run_schedules()
        notifier = notifier_of(self.backend)
        if notifier is not None:
            notifier.notify_work_available()
        await self.worker.tick()


def _reads_engine_clock(backend: Backend) -> bool:
    """Whether the backend stamps times from :func:`openworkflow.core.clock.now` (SQLite)."""
    return isinstance(backend, SqliteBackend)
