"""PostgreSQL: the writes that end a run or send it back (complete, fail, cancel, retry).

Every terminal transition closes the run's running step attempts and wakes a
parent waiting on it, in the transaction that finishes the run. Completions
of runs without a parent are group-committed: one statement for a batch.

Writes given a ``claim_attempt`` are fenced on it too (see
:data:`~openworkflow.postgres.step_queries.CLAIM_HELD`): inside the batch
statement for group-committed completions; otherwise the run row is checked
and locked first, in the write's transaction (an extra statement, on the
rarer paths: a child's completion, a failure, a reschedule).

A retry sent back until later tells idle workers with the due-later
notification (``queries.FAIL_WORKFLOW_RUN``, ``RESCHEDULE_AFTER_FAILED_STEP``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg.types.json import Jsonb

from openworkflow.backend_common import decide_conflict, require
from openworkflow.core.backend import (
    CancelWorkflowRunParams,
    CompleteWorkflowRunParams,
    FailWorkflowRunParams,
    RescheduleWorkflowRunAfterFailedStepAttemptParams,
    RetryWorkflowRunParams,
)
from openworkflow.core.closing import closed_step_attempt_error
from openworkflow.core.retry import compute_failed_workflow_run_update
from openworkflow.core.workflow_run import (
    WorkflowRun,
    WorkflowRunStatus,
    resolve_cancel_conflict,
    resolve_retry_conflict,
)
from openworkflow.errors import WriteConflictError
from openworkflow.group_commit import GroupCommit
from openworkflow.postgres.base import Connection, jsonb, load_time, to_run
from openworkflow.postgres.counts import rendered
from openworkflow.postgres.runs import PostgresRuns
from openworkflow.postgres.step_queries import (
    COMPLETE_CLAIMED_RUNS_WITHOUT_PARENT,
    LOCK_CLAIMED_RUN,
)


@dataclass(frozen=True, slots=True)
class Completion:
    """One run completion waiting for its group-commit batch."""

    namespace_id: str
    run_id: str
    worker_id: str
    output: Jsonb | None
    claim_attempt: int | None


class PostgresFinishing(PostgresRuns):
    """Completing, failing, rescheduling, canceling and retrying runs."""

    _completions: GroupCommit[Completion, WorkflowRun | None]

    async def complete_workflow_run(self, params: CompleteWorkflowRunParams) -> WorkflowRun:
        """Fenced: mark the run completed and wake its parent.

        Runs without a parent are group-committed with other completions; a
        child run (or a refused one) goes through the single-run transaction.
        """
        self._check_open()
        completed = await self._completions.submit(
            Completion(
                namespace_id=self._namespace_id,
                run_id=params.workflow_run_id,
                worker_id=params.worker_id,
                output=jsonb(params.output),
                claim_attempt=params.claim_attempt,
            )
        )
        return completed or await self._complete_workflow_run_alone(params)

    async def _write_completions(
        self, items: Sequence[Completion]
    ) -> list[WorkflowRun | BaseException | None]:
        rows = await self._fetchall(
            self._claim_sql(COMPLETE_CLAIMED_RUNS_WITHOUT_PARENT),
            self._params(
                namespace_ids=[item.namespace_id for item in items],
                run_ids=[item.run_id for item in items],
                worker_ids=[item.worker_id for item in items],
                outputs=[item.output for item in items],
                claim_attempts=[item.claim_attempt for item in items],
                closed_error=jsonb(closed_step_attempt_error("completed")),
            ),
        )
        completed = {(run.namespace_id, run.id): run for run in map(to_run, rows)}
        return [completed.get((item.namespace_id, item.run_id)) for item in items]

    def _claim_sql(self, template: str) -> bytes:
        """A claim-fence statement rendered for this backend's schema."""
        return rendered(template, self._q.schema)

    async def _check_claim(
        self, connection: Connection, run_id: str, worker_id: str, claim_attempt: int | None
    ) -> None:
        """In the caller's transaction: refuse unless ``claim_attempt`` still holds the run.

        Locks the run until the transaction ends. Nothing to check without a claim.
        """
        if claim_attempt is None:
            return
        values = self._owned(run_id, worker_id, claim_attempt=claim_attempt)
        cursor = await connection.execute(self._claim_sql(LOCK_CLAIMED_RUN), values)
        if await cursor.fetchone() is None:
            raise WriteConflictError(f"workflow run {run_id} is no longer held by this claim")

    async def _complete_workflow_run_alone(self, params: CompleteWorkflowRunParams) -> WorkflowRun:
        values = self._owned(params.workflow_run_id, params.worker_id, output=jsonb(params.output))
        async with self._connection() as connection, connection.transaction():
            await self._check_claim(
                connection, params.workflow_run_id, params.worker_id, params.claim_attempt
            )
            row = require(
                await self._one(connection, self._q.complete_workflow_run, values),
                "mark workflow run completed",
            )
            run = to_run(row)
            await self._close_open_step_attempts(connection, run)
            await self._wake_parent(connection, run)
        return run

    async def fail_workflow_run(self, params: FailWorkflowRunParams) -> WorkflowRun:
        """Fenced: apply the retry decision at database time; failing for good wakes the parent."""
        values = self._owned(params.workflow_run_id, params.worker_id)
        async with self._connection() as connection, connection.transaction():
            await self._check_claim(
                connection, params.workflow_run_id, params.worker_id, params.claim_attempt
            )
            current = require(
                await self._one(connection, self._q.select_owned_run_for_failure, values),
                "mark workflow run failed",
            )
            db_now, row_attempts, row_deadline = current
            attempts, deadline_at = params.attempts, params.deadline_at
            if attempts is None:
                attempts, deadline_at = row_attempts, row_deadline
            update = compute_failed_workflow_run_update(
                params.retry_policy, attempts, deadline_at, params.error, load_time(db_now)
            )
            values.update(
                status=update.status,
                available_at=update.available_at,
                finished_at=update.finished_at,
                error=jsonb(update.error),
            )
            run = to_run(
                require(
                    await self._one(connection, self._q.fail_workflow_run, values),
                    "mark workflow run failed",
                )
            )
            if run.status == WorkflowRunStatus.FAILED:
                await self._close_open_step_attempts(connection, run)
                await self._wake_parent(connection, run)
        return run

    async def reschedule_workflow_run_after_failed_step_attempt(
        self, params: RescheduleWorkflowRunAfterFailedStepAttemptParams
    ) -> WorkflowRun:
        """Fenced: send the run back to pending until ``available_at``."""
        values = self._owned(
            params.workflow_run_id,
            params.worker_id,
            available_at=params.available_at,
            error=jsonb(params.error),
        )
        statement = self._q.reschedule_after_failed_step
        if params.claim_attempt is None:
            row = await self._fetchone(statement, values)
        else:
            async with self._connection() as connection, connection.transaction():
                await self._check_claim(
                    connection, params.workflow_run_id, params.worker_id, params.claim_attempt
                )
                row = await self._one(connection, statement, values)
        return to_run(require(row, "reschedule workflow run after failed step attempt"))

    async def cancel_workflow_run(self, params: CancelWorkflowRunParams) -> WorkflowRun:
        """Cancel an active run (idempotently) and wake its parent."""
        values = self._params(run_id=params.workflow_run_id)
        async with self._connection() as connection, connection.transaction():
            row = await self._one(connection, self._q.cancel_workflow_run, values)
            canceled = None if row is None else to_run(row)
            if canceled is not None:
                await self._close_open_step_attempts(connection, canceled)
                await self._wake_parent(connection, canceled)
        if canceled is not None:
            return canceled
        return await decide_conflict(
            self.get_workflow_run, params.workflow_run_id, resolve_cancel_conflict
        )

    async def retry_workflow_run(self, params: RetryWorkflowRunParams) -> WorkflowRun:
        """Put a failed or canceled run back to pending; failed steps will run again."""
        values = self._params(run_id=params.workflow_run_id)
        async with self._connection() as connection, connection.transaction():
            row = await self._one(connection, self._q.retry_workflow_run, values)
            if row is not None:
                await connection.execute(self._q.delete_attempts_to_rerun, values)
        if row is not None:
            return to_run(row)
        return await decide_conflict(
            self.get_workflow_run, params.workflow_run_id, resolve_retry_conflict
        )

    async def _close_open_step_attempts(self, connection: Connection, run: WorkflowRun) -> None:
        """Fail the finished ``run``'s running attempts, in the caller's transaction."""
        await connection.execute(
            self._q.close_open_step_attempts,
            self._params(run_id=run.id, closed_error=jsonb(closed_step_attempt_error(run.status))),
        )

    async def _wake_parent(self, connection: Connection, child: WorkflowRun) -> None:
        if child.parent_step_attempt_namespace_id is None or child.parent_step_attempt_id is None:
            return
        parent_ns = child.parent_step_attempt_namespace_id
        values = self._params(
            parent_ns=parent_ns,
            parent_step_id=child.parent_step_attempt_id,
            child_ns=child.namespace_id,
            child_id=child.id,
        )
        parent = await self._one(connection, self._q.select_waiting_parent_for_update, values)
        if parent is not None:
            await connection.execute(
                self._q.wake_parked_runs, {**values, "ns": parent_ns, "run_ids": [parent[0]]}
            )
