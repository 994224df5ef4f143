"""Handing a run back for immediate pickup: after a database fault, and at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from openworkflow.core import clock
from openworkflow.core.backend import Backend, SleepWorkflowRunParams
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import BackendError, WriteConflictError
from openworkflow.worker.db_clock import DatabaseClock
from openworkflow.worker.execution import WorkflowExecution
from openworkflow.worker.metrics import HANDED_BACK, WorkerMetrics

logger = logging.getLogger("openworkflow.worker")


def _abandoned(execution: WorkflowExecution | None) -> tuple[str, ...]:
    return execution.abandoned_attempt_ids() if execution is not None else ()


class HandBack:
    """Parks a worker's runs as due now, so any worker (this one too) picks them up at once."""

    def __init__(
        self,
        backend: Backend,
        database_clock: DatabaseClock | None,
        *,
        lease_duration_ms: int,
        stop_now: asyncio.Event,
        metrics: WorkerMetrics | None,
    ) -> None:
        self._backend = backend
        self._database_clock = database_clock
        self._lease_s = lease_duration_ms / 1000
        self._stop_now = stop_now
        self._metrics = metrics

    def _due_now(self) -> datetime:
        """Just before now by the clock that rules: the database's, when it stamps times.

        Estimated early on purpose: a worker whose clock runs ahead must not
        hand a run back as due minutes from now (its shutdown path runs
        outside the corrected context of its passes).
        """
        now = clock.now() if self._database_clock is None else self._database_clock.earliest_now()
        return now - timedelta(milliseconds=1)

    async def hand_back(
        self, worker_id: str, run: WorkflowRun, abandoned: tuple[str, ...] = ()
    ) -> None:
        """Park the run as due now.

        The function attempts the pass abandoned are deleted with it: the pass
        was interrupted on purpose (or by a database fault), not by a crash,
        so they must not count towards the step's crash limit.
        """
        await self._backend.sleep_workflow_run(
            SleepWorkflowRunParams(
                workflow_run_id=run.id,
                worker_id=worker_id,
                claim_attempt=run.attempts,
                available_at=self._due_now(),
                abandoned_step_attempt_ids=abandoned,
            )
        )

    async def after_fault(
        self, worker_id: str, run: WorkflowRun, execution: WorkflowExecution | None
    ) -> None:
        """Hand the run back, retrying until its lease would expire.

        If the database stays unreachable, the lease simply expires and any
        worker resumes the run then.
        """
        abandoned = _abandoned(execution)
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._lease_s
        delay = 0.1
        while not self._stop_now.is_set():
            try:
                # A call blocked on an unreachable database must not outlive the lease.
                remaining = max(give_up_at - loop.time(), 0.001)
                await asyncio.wait_for(self.hand_back(worker_id, run, abandoned), remaining)
            except WriteConflictError:
                return  # finished, canceled or reclaimed meanwhile
            except (BackendError, TimeoutError) as error:
                if loop.time() + delay >= give_up_at:
                    logger.warning(
                        "Could not hand back run %s (%s); it resumes when its lease expires",
                        run.id,
                        error,
                    )
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            logger.info("Handed workflow run %s back after a database error", run.id)
            return

    async def release(
        self,
        worker_id: str,
        run: WorkflowRun,
        task: asyncio.Task[None],
        execution_task: asyncio.Task[None] | None,
        execution: WorkflowExecution | None,
    ) -> None:
        """Cancel a pass still running (at shutdown) and hand its run back."""
        if execution_task is not None:
            execution_task.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        try:
            await self.hand_back(worker_id, run, _abandoned(execution))
        except WriteConflictError:
            return  # finished, canceled or reclaimed meanwhile: nothing to release
        except Exception:
            logger.exception("Could not release the lease of workflow run %s", run.id)
            return
        if self._metrics is not None:
            self._metrics.run_rescheduled(run.workflow_name, HANDED_BACK)
        logger.info("Released the lease of workflow run %s", run.id)
