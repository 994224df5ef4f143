"""A worker's presence in the database, and the runs no live worker knows.

Claims are routed: a worker claims only runs of the (name, version) pairs it
registered, inside the claim statement, so workers with different workflow
sets share one database without taking each other's runs. A run that no
worker knows would then wait silently, so each worker records itself and its
workflows (refreshed well within :data:`PRESENCE_TTL_MS`), and a worker with a
free slot sweeps: it claims the due runs that no live worker registered; its
usual path then warns about them and reschedules them with a growing delay, as
the original does for an unknown workflow.

A new run announces itself (a wake-up: this process's writes, NOTIFY, the
SQLite watcher), so sweeps follow wake-ups, at most every
:data:`UNROUTED_SWEEP_S`; with none, each empty sweep doubles the pause before
the next, up to :data:`UNROUTED_SWEEP_MAX_S` (a wake-up lost, or a worker that
stopped registering a workflow). An idle worker then costs a query every few
seconds, not one every two. A backend without wake-ups is swept every
:data:`UNROUTED_SWEEP_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from openworkflow.core.backend import (
    Backend,
    ClaimUnroutedWorkflowRunsParams,
    WorkerRegistration,
    WorkflowKey,
)
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import BackendError
from openworkflow.event_loop import cancel_and_wait
from openworkflow.notifications import notifier_of, resolve_waiter

logger = logging.getLogger("openworkflow.worker")

PRESENCE_TTL_MS = 30_000
"""A registration not refreshed for this long is no longer a live worker's."""

PRESENCE_REFRESH_S = 10.0
"""How often a worker refreshes its registration."""

UNROUTED_SWEEP_S = 2.0
"""Shortest pause between two sweeps for runs that no live worker knows."""

UNROUTED_SWEEP_MAX_S = 8.0
"""Longest pause between two sweeps, after empty sweeps with no wake-up between them."""


class WorkerPresence:
    """Keeps one worker registered and sweeps for unrouted runs until stopped.

    ``free_slots`` gives the slot ids free now; ``start_runs`` hands claimed
    runs to their slots. ``claim_lock`` is the worker's: a sweep and a
    regular claim never hand out the same free slot.
    """

    def __init__(
        self,
        backend: Backend,
        worker_id: str,
        workflows: Sequence[WorkflowKey],
        *,
        lease_duration_ms: int,
        claim_lock: asyncio.Lock,
        free_slots: Callable[[], list[str]],
        start_runs: Callable[[list[WorkflowRun]], None],
    ) -> None:
        self._backend = backend
        self._worker_id = worker_id
        self._workflows = list(workflows)
        self._lease_duration_ms = lease_duration_ms
        self._claim_lock = claim_lock
        self._free_slots = free_slots
        self._start_runs = start_runs
        self._task: asyncio.Task[None] | None = None
        self._registered_at: float | None = None
        self._notifier = notifier_of(backend)
        # Set (from any thread) when work was announced since the last sweep.
        self._work_announced = True
        # While the loop sleeps through a long pause, the first announcement wakes it.
        self._sleeping: asyncio.Future[None] | None = None

    def start(self) -> None:
        """Register and sweep in the background (idempotent)."""
        if self._task is None:
            if self._notifier is not None:
                self._notifier.watch_work_announced(self._note_work)
            self._task = asyncio.create_task(self._run(), name="openworkflow-worker-presence")

    async def stop(self) -> None:
        """Stop sweeping and remove the registration (a failure to remove is only logged)."""
        task, self._task = self._task, None
        if self._notifier is not None:
            self._notifier.unwatch_work_announced(self._note_work)
        await cancel_and_wait(task)
        if self._registered_at is None:
            return
        self._registered_at = None
        try:
            await self._backend.unregister_worker(self._worker_id)
        except Exception as error:  # it expires on its own
            logger.debug("Could not unregister worker %s: %s", self._worker_id, error)

    def _note_work(self) -> None:
        # Called from any thread, often under load: a plain store, and a
        # thread-safe wake-up only for a loop asleep in a long pause.
        self._work_announced = True
        sleeping, self._sleeping = self._sleeping, None
        if sleeping is not None:
            resolve_waiter(sleeping)

    async def _run(self) -> None:
        pause = UNROUTED_SWEEP_S
        while True:
            self._work_announced = self._notifier is None  # no wake-ups: sweep every time
            claimed = await self.sweep()
            pause = UNROUTED_SWEEP_S if claimed else min(2 * pause, UNROUTED_SWEEP_MAX_S)
            # The shortest pause in any case; then, unless work was announced
            # meanwhile, the rest of the pause or the first announcement. The
            # registration is refreshed on time in between.
            await asyncio.sleep(UNROUTED_SWEEP_S)
            slept = UNROUTED_SWEEP_S
            while slept < pause:
                nap = min(pause - slept, self._registration_due_in())
                if await self._sleep_unless_work(nap):
                    break
                slept += nap
                await self._refresh_registration()

    async def _sleep_unless_work(self, seconds: float) -> bool:
        """Sleep ``seconds``, or less if work is announced; whether it was."""
        sleeping = asyncio.get_running_loop().create_future()
        self._sleeping = sleeping  # first, then the check: _note_work sees one or the other
        try:
            if not self._work_announced:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sleeping, seconds)
        finally:
            self._sleeping = None
        return self._work_announced

    async def sweep(self) -> int:
        """Refresh the registration when due, then claim unrouted runs; how many were claimed.

        Nothing is swept before this worker is registered: its own workflows
        would look unknown to the database.
        """
        await self._refresh_registration()
        if self._registered_at is None:
            return 0
        return await self._sweep()

    def _registration_due_in(self) -> float:
        if self._registered_at is None:
            return UNROUTED_SWEEP_S  # not registered yet: try again soon
        elapsed = asyncio.get_running_loop().time() - self._registered_at
        return max(0.01, PRESENCE_REFRESH_S - elapsed)

    async def _refresh_registration(self) -> None:
        now = asyncio.get_running_loop().time()
        due = self._registered_at is None or now - self._registered_at >= PRESENCE_REFRESH_S
        if due and await self._register():
            self._registered_at = now

    async def _register(self) -> bool:
        try:
            await self._backend.register_worker(
                WorkerRegistration(
                    worker_id=self._worker_id, workflows=self._workflows, ttl_ms=PRESENCE_TTL_MS
                )
            )
        except BackendError as error:
            logger.warning("Could not register worker %s: %s", self._worker_id, error)
            return False
        return True

    async def _sweep(self) -> int:
        """Claim due runs no live worker registered for, into free slots."""
        async with self._claim_lock:
            free = self._free_slots()
            if not free:
                return 0
            try:
                runs = await self._backend.claim_unrouted_workflow_runs(
                    ClaimUnroutedWorkflowRunsParams(
                        worker_ids=free, lease_duration_ms=self._lease_duration_ms
                    )
                )
            except BackendError as error:
                logger.debug("Sweep for unrouted runs failed: %s", error)
                return 0
            self._start_runs(runs)
            return len(runs)
