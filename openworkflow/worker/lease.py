"""Keeping a claimed run's lease, and noticing at once when the run is canceled.

One task per pass renews the lease every heartbeat interval. Between
renewals it waits on the backend's notifier for the run instead of sleeping,
so a cancel (PostgreSQL's LISTEN/NOTIFY, an in-process cancel or the
``data_version`` watcher on SQLite) reaches the pass within a fraction of a
second rather than at the next renewal: async step bodies are cancelled and
sync ones see ``step_context().cancel_requested``.
"""

from __future__ import annotations

import asyncio
import logging

from openworkflow.core import clock
from openworkflow.core.backend import (
    Backend,
    ExtendWorkflowRunLeaseParams,
    GetWorkflowRunParams,
)
from openworkflow.core.workflow_run import WorkflowRun, WorkflowRunStatus
from openworkflow.errors import BackendError, WriteConflictError
from openworkflow.notifications import ChangeNotifier
from openworkflow.worker.db_clock import DatabaseClock
from openworkflow.worker.execution import WorkflowExecution
from openworkflow.worker.metrics import WorkerMetrics

logger = logging.getLogger("openworkflow.worker")

CANCEL_CHECK_INTERVAL_S = 0.2
"""Fewest seconds between two reads of a run after wake-ups (and after the claim).

On SQLite every commit by any connection wakes the waiters, so reads are
spaced out; a pass shorter than this never reads its run at all.
"""


class LeaseKeeper:
    """Renews one pass's lease and watches its run for a cancel.

    When the lease is lost or runs out, or the run is canceled, the pass's
    task is cancelled (unless its final, fenced write is under way).
    """

    def __init__(
        self,
        backend: Backend,
        notifier: ChangeNotifier | None,
        worker_id: str,
        execution: WorkflowExecution,
        task: asyncio.Task[None],
        *,
        lease_duration_ms: int,
        heartbeat_interval_s: float,
        metrics: WorkerMetrics | None = None,
        database_clock: DatabaseClock | None = None,
    ) -> None:
        self._backend = backend
        # Renewals come back stamped with the database's NOW(): samples of its clock.
        self._database_clock = database_clock
        self._metrics = metrics  # counts renewals that failed (None: not counted)
        self._notifier = notifier
        self._worker_id = worker_id
        self._execution = execution
        self._run: WorkflowRun = execution.run
        self._task = task
        self._lease_s = lease_duration_ms / 1000
        self._lease_duration_ms = lease_duration_ms
        self._heartbeat_interval_s = heartbeat_interval_s
        self._loop = asyncio.get_running_loop()
        # The claim has just seen the run running: no read before this.
        self._next_check = self._loop.time() + CANCEL_CHECK_INTERVAL_S
        # Resolved at the run's next wake-up; re-armed before each read, so
        # none is missed while reading or renewing.
        self._waiter = (
            None if self._notifier is None else self._notifier.watch_run(self._run.id, patient=True)
        )
        self._unchecked_wake = False

    async def keep(self) -> None:
        """Renew the lease until the pass ends; stop the pass when it must not go on."""
        try:
            await self._keep()
        finally:
            self._unwatch()

    def _unwatch(self) -> None:
        if self._notifier is not None and self._waiter is not None:
            self._notifier.unwatch_run(self._run.id, self._waiter)
            self._waiter = None

    async def _keep(self) -> None:
        last_renewed = self._loop.time()
        while not self._task.done():
            if await self._watch_until(self._loop.time() + self._heartbeat_interval_s):
                self._stop_canceled()
                return
            lease_left = last_renewed + self._lease_s - self._loop.time()
            if lease_left <= 0:
                # The loop was blocked (or the process paused) past the lease:
                # another worker may own the run already.
                self._renewal_failed()
                self._give_up("expired")
                return
            try:
                # A renewal stuck on an unreachable database must not outlive the
                # lease. (asyncio.timeout, unlike wait_for, leaves no orphan task
                # with an unread error when the heartbeat itself is cancelled.)
                async with asyncio.timeout(lease_left):
                    await self._renew()
                last_renewed = self._loop.time()
            except WriteConflictError:
                # Refused: the run was canceled (a wake-up we had not read yet,
                # or none came), or another worker took it over.
                if await self._read_canceled(self._loop.time() + self._lease_s / 4):
                    self._stop_canceled()
                else:
                    if not self._execution.finishing:  # else: refused as the final write landed
                        self._renewal_failed()
                    self._give_up("was lost")
                return
            except Exception as error:
                self._renewal_failed()
                if isinstance(error, BackendError | TimeoutError):
                    logger.warning("Heartbeat for workflow run %s failed: %s", self._run.id, error)
                else:
                    logger.exception("Heartbeat for workflow run %s failed", self._run.id)
                if self._loop.time() - last_renewed >= self._lease_s:
                    self._give_up("expired")
                    return

    async def _renew(self) -> None:
        """Extend the lease; its reply's timestamp is a sample of the database's clock."""
        sent_at = clock.precise_uncorrected_now()
        renewed = await self._backend.extend_workflow_run_lease(
            ExtendWorkflowRunLeaseParams(
                workflow_run_id=self._run.id,
                worker_id=self._worker_id,
                lease_duration_ms=self._lease_duration_ms,
            )
        )
        if self._database_clock is not None:
            self._database_clock.observe(sent_at, [renewed])

    async def _watch_until(self, until: float) -> bool:
        """Wait until loop time ``until``; True as soon as the run is seen canceled.

        The run is read only after a wake-up for it, at most every
        :data:`CANCEL_CHECK_INTERVAL_S`, and not once the final write is under
        way (that write is fenced, and its own notification wakes us too).
        The next wake-up is watched for from before each read until after the
        renewal, so a cancel landing during either is not missed.
        """
        notifier = self._notifier
        if notifier is None:
            await asyncio.sleep(max(0.0, until - self._loop.time()))
            return False
        while True:
            if self._unchecked_wake:
                if self._task.done() or self._execution.finishing:
                    self._unchecked_wake = False  # our own final write woke us
                else:
                    # Wake-ups are coalesced: one read covers every change until it starts.
                    delay = self._next_check - self._loop.time()
                    if delay > 0:
                        await asyncio.sleep(min(delay, max(0.0, until - self._loop.time())))
                    if self._loop.time() >= until:
                        return False  # renew first; the wake is checked right after
                    self._unchecked_wake = False
                    if await self._read_canceled(until):
                        return True
            remaining = until - self._loop.time()
            if remaining <= 0:
                return False
            waiter = self._waiter
            if waiter is None or not await _resolved_by(waiter, remaining):
                return False
            self._unwatch()
            self._waiter = notifier.watch_run(self._run.id, patient=True)
            self._unchecked_wake = True

    async def _read_canceled(self, until: float) -> bool:
        """Whether the run is canceled now (a failed or too slow read says no)."""
        if self._task.done() or self._execution.finishing:
            return False
        now = self._loop.time()
        self._next_check = now + CANCEL_CHECK_INTERVAL_S
        # A read stuck on an unreachable database must not hold up the renewal
        # for long (the renewal, due at ``until``, deals with the database).
        budget = max(until - now, min(CANCEL_CHECK_INTERVAL_S, self._heartbeat_interval_s))
        try:
            async with asyncio.timeout(budget):
                current = await self._backend.get_workflow_run(
                    GetWorkflowRunParams(workflow_run_id=self._run.id)
                )
        except Exception as error:  # the renewal reports database trouble
            logger.debug("Could not check workflow run %s for a cancel: %s", self._run.id, error)
            return False
        return current is not None and current.status == WorkflowRunStatus.CANCELED

    def _renewal_failed(self) -> None:
        """Count a renewal that failed, was refused (not for a cancel) or came too late."""
        if self._metrics is not None:
            self._metrics.lease_renewal_failed()

    def _stop_canceled(self) -> None:
        """The run was canceled: tell its step bodies, and stop the pass."""
        self._execution.cancel_requested.set()
        if self._execution.finishing or self._task.done():
            return  # the final write is fenced: it is refused and dropped
        logger.info("Workflow run %s was canceled by request; stopping its execution", self._run.id)
        self._task.cancel()

    def _give_up(self, how: str) -> None:
        """Cancel the pass of a run whose lease is gone.

        Not while its final write is under way: that write is fenced, so it
        lands only if the run is still ours, and cancelling it midway would
        leave its outcome unknown to this worker.
        """
        if self._execution.finishing:
            return
        logger.warning("Lease of workflow run %s %s; cancelling its execution", self._run.id, how)
        self._task.cancel()


async def _resolved_by(waiter: asyncio.Future[None], timeout: float) -> bool:
    """Whether ``waiter`` resolves within ``timeout`` seconds (it is left as it is)."""
    if not waiter.done():
        await asyncio.wait((waiter,), timeout=timeout)
    return waiter.done()
