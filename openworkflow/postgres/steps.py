"""PostgreSQL: step attempts (inserts group-committed, one statement a batch) and signals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg.types.json import Jsonb

from openworkflow.backend_common import require
from openworkflow.core.backend import (
    CompleteStepAttemptParams,
    CreateCompletedStepAttemptParams,
    CreateStepAttemptParams,
    FailStepAttemptParams,
    GetSignalDeliveryParams,
    GetStepAttemptParams,
    ListStepAttemptsParams,
    SendSignalParams,
    SendSignalResult,
    SetStepAttemptChildWorkflowRunParams,
    SignalDelivery,
)
from openworkflow.core.cursor import Page
from openworkflow.core.ids import new_id
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.errors import WriteConflictError
from openworkflow.group_commit import GroupCommit
from openworkflow.postgres.base import jsonb, lock_scope, to_step
from openworkflow.postgres.finishing import PostgresFinishing


@dataclass(frozen=True, slots=True)
class StepInsert:
    """One step attempt waiting for its group-commit batch."""

    namespace_id: str
    id: str
    run_id: str
    worker_id: str
    step_name: str
    kind: str
    status: str
    config: Jsonb | None
    context: Jsonb | None
    output: Jsonb | None
    claim_attempt: int | None


class PostgresSteps(PostgresFinishing):
    """Step attempts and signals."""

    _step_inserts: GroupCommit[StepInsert, StepAttempt]

    async def create_step_attempt(self, params: CreateStepAttemptParams) -> StepAttempt:
        """Fenced: insert a running step attempt for an owned run."""
        return await self._insert_step(params, "running", None)

    async def create_completed_step_attempt(
        self, params: CreateCompletedStepAttemptParams
    ) -> StepAttempt:
        """Fenced: insert a completed step attempt (with its output) for an owned run."""
        return await self._insert_step(params, "completed", jsonb(params.output))

    async def _insert_step(
        self,
        params: CreateStepAttemptParams | CreateCompletedStepAttemptParams,
        status: str,
        output: Jsonb | None,
    ) -> StepAttempt:
        self._check_open()
        return await self._step_inserts.submit(
            StepInsert(
                namespace_id=self._namespace_id,
                id=new_id(),
                run_id=params.workflow_run_id,
                worker_id=params.worker_id,
                step_name=params.step_name,
                kind=params.kind,
                status=status,
                config=jsonb(params.config if params.config is not None else {}),
                context=jsonb(params.context),
                output=output,
                claim_attempt=params.claim_attempt,
            )
        )

    async def _write_step_inserts(
        self, items: Sequence[StepInsert]
    ) -> list[StepAttempt | BaseException]:
        """Write a batch of step attempts in one statement; a refused item fails alone.

        Each item is fenced on its run, worker id and (when given) claim.
        """
        rows = await self._fetchall(
            self._q.insert_step_attempts,
            {
                "namespace_ids": [item.namespace_id for item in items],
                "ids": [item.id for item in items],
                "run_ids": [item.run_id for item in items],
                "worker_ids": [item.worker_id for item in items],
                "step_names": [item.step_name for item in items],
                "kinds": [item.kind for item in items],
                "statuses": [item.status for item in items],
                "configs": [item.config for item in items],
                "contexts": [item.context for item in items],
                "outputs": [item.output for item in items],
                "claim_attempts": [item.claim_attempt for item in items],
            },
        )
        inserted = {attempt.id: attempt for attempt in map(to_step, rows)}
        return [
            inserted.get(item.id)
            or WriteConflictError(
                f"Failed to create {'completed ' if item.status == 'completed' else ''}step attempt"
            )
            for item in items
        ]

    async def get_step_attempt(self, params: GetStepAttemptParams) -> StepAttempt | None:
        """Return the step attempt, or None."""
        row = await self._read_one(
            self._q.select_step_attempt, self._params(step_id=params.step_attempt_id)
        )
        return None if row is None else to_step(row)

    async def list_step_attempts(self, params: ListStepAttemptsParams) -> Page[StepAttempt]:
        """List a run's step attempts oldest first, with cursor pagination."""
        return await self._list_page(
            "step_attempts",
            "ASC",
            ['"namespace_id" = %(ns)s', '"workflow_run_id" = %(run_id)s'],
            self._params(run_id=params.workflow_run_id),
            params.limit,
            params.after,
            params.before,
        )

    async def complete_step_attempt(self, params: CompleteStepAttemptParams) -> StepAttempt:
        """Fenced: mark the attempt completed (a repeat keeps the first output)."""
        row = await self._fetchone(
            self._q.complete_step_attempt,
            self._owned(
                params.workflow_run_id,
                params.worker_id,
                step_id=params.step_attempt_id,
                output=jsonb(params.output),
                claim_attempt=params.claim_attempt,
            ),
        )
        return to_step(require(row, "mark step attempt completed"))

    async def fail_step_attempt(self, params: FailStepAttemptParams) -> StepAttempt:
        """Fenced: mark the attempt failed (a repeat keeps the first error)."""
        row = await self._fetchone(
            self._q.fail_step_attempt,
            self._owned(
                params.workflow_run_id,
                params.worker_id,
                step_id=params.step_attempt_id,
                error=jsonb(params.error),
                claim_attempt=params.claim_attempt,
            ),
        )
        return to_step(require(row, "mark step attempt failed"))

    async def set_step_attempt_child_workflow_run(
        self, params: SetStepAttemptChildWorkflowRunParams
    ) -> StepAttempt:
        """Fenced: link a running attempt to the child run it started."""
        row = await self._fetchone(
            self._q.set_step_child,
            self._owned(
                params.workflow_run_id,
                params.worker_id,
                step_id=params.step_attempt_id,
                child_ns=params.child_workflow_run_namespace_id,
                child_id=params.child_workflow_run_id,
                claim_attempt=params.claim_attempt,
            ),
        )
        return to_step(require(row, "set step attempt child workflow run"))

    # -- signals -------------------------------------------------------------

    async def send_signal(self, params: SendSignalParams) -> SendSignalResult:
        """Deliver ``data`` once to every running wait on the signal, and wake those runs."""
        values = self._params(
            signal=params.signal,
            data=jsonb(params.data),
            idempotency_key=params.idempotency_key,
        )
        async with self._connection() as connection, connection.transaction():
            if params.idempotency_key is not None:
                values["scope"] = lock_scope(
                    namespaceId=self._namespace_id,
                    signal=params.signal,
                    idempotencyKey=params.idempotency_key,
                )
                await connection.execute(self._q.lock_idempotency_scope, values)
                cursor = await connection.execute(self._q.select_signal_runs_by_key, values)
                earlier = [row[0] for row in await cursor.fetchall()]
                if earlier:
                    return SendSignalResult(workflow_run_ids=earlier)
            cursor = await connection.execute(self._q.deliver_signal, values)
            delivered = list(dict.fromkeys(row[0] for row in await cursor.fetchall()))
            if delivered:
                values["run_ids"] = delivered
                await connection.execute(self._q.lock_runs, values)
                await connection.execute(self._q.wake_parked_runs, values)
        return SendSignalResult(workflow_run_ids=delivered)

    async def get_signal_delivery(self, params: GetSignalDeliveryParams) -> SignalDelivery | None:
        """Return what was delivered to a waiting attempt, or None."""
        row = await self._read_one(
            self._q.select_signal_delivery, self._params(step_id=params.step_attempt_id)
        )
        return None if row is None else SignalDelivery(data=row[0])
