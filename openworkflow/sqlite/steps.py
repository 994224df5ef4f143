"""SQLite: step attempts (inserts group-committed) and signals."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from openworkflow.backend_common import require
from openworkflow.core import clock
from openworkflow.core import json as ow_json
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
from openworkflow.group_commit import GroupCommit
from openworkflow.sqlite import queries as q
from openworkflow.sqlite.base import Params, iso, to_step
from openworkflow.sqlite.connection import transaction, write_each
from openworkflow.sqlite.finishing import SqliteFinishing


@dataclass(frozen=True, slots=True)
class StepWrite:
    """One step-attempt insert waiting for its group-commit batch."""

    query: str
    values: dict[str, Any]
    operation: str


class SqliteSteps(SqliteFinishing):
    """Step attempts and signals."""

    _step_writes: GroupCommit[StepWrite, StepAttempt]

    async def create_step_attempt(self, params: CreateStepAttemptParams) -> StepAttempt:
        """Fenced: insert a running step attempt for an owned run."""
        values = self._new_step_values(params)
        return await self._step_writes.submit(
            StepWrite(q.INSERT_STEP_ATTEMPT, values, "create step attempt")
        )

    async def create_completed_step_attempt(
        self, params: CreateCompletedStepAttemptParams
    ) -> StepAttempt:
        """Fenced: insert a completed step attempt (with its output) for an owned run."""
        values = self._new_step_values(params)
        values["output"] = ow_json.dumps_or_none(params.output)
        return await self._step_writes.submit(
            StepWrite(q.INSERT_COMPLETED_STEP_ATTEMPT, values, "create completed step attempt")
        )

    async def _write_steps(self, writes: Sequence[StepWrite]) -> list[StepAttempt | BaseException]:
        """Group commit: the step inserts of concurrent executions in one transaction."""

        def write(c: sqlite3.Connection, item: StepWrite) -> StepAttempt:
            return to_step(require(c.execute(item.query, item.values).fetchone(), item.operation))

        return await self._run(lambda c: write_each(c, writes, write))

    def _new_step_values(
        self, params: CreateStepAttemptParams | CreateCompletedStepAttemptParams
    ) -> Params:
        """The owner and claim fences, and the id, name, kind, config and context of an attempt."""
        return self._owned(
            params.workflow_run_id,
            params.worker_id,
            id=new_id(),
            step_name=params.step_name,
            kind=params.kind,
            config=ow_json.dumps(params.config if params.config is not None else {}),
            context=ow_json.dumps_or_none(params.context),
            now=iso(clock.now()),
            claim_attempt=params.claim_attempt,
        )

    async def get_step_attempt(self, params: GetStepAttemptParams) -> StepAttempt | None:
        """Return the step attempt, or None."""
        values = {"ns": self._namespace_id, "step_id": params.step_attempt_id}
        row = await self._run(lambda c: c.execute(q.SELECT_STEP_ATTEMPT, values).fetchone())
        return None if row is None else to_step(row)

    async def list_step_attempts(self, params: ListStepAttemptsParams) -> Page[StepAttempt]:
        """List a run's step attempts oldest first, with cursor pagination."""
        return await self._list_page(
            "step_attempts",
            "ASC",
            '"namespace_id" = :ns AND "workflow_run_id" = :run_id',
            {"ns": self._namespace_id, "run_id": params.workflow_run_id},
            params.limit,
            params.after,
            params.before,
            to_step,
        )

    async def complete_step_attempt(self, params: CompleteStepAttemptParams) -> StepAttempt:
        """Fenced: mark the attempt completed (a repeat keeps the first output)."""
        values = self._owned(
            params.workflow_run_id,
            params.worker_id,
            step_id=params.step_attempt_id,
            output=ow_json.dumps_or_none(params.output),
            now=iso(clock.now()),
            claim_attempt=params.claim_attempt,
        )
        row = await self._run(lambda c: c.execute(q.COMPLETE_STEP_ATTEMPT, values).fetchone())
        return to_step(require(row, "mark step attempt completed"))

    async def fail_step_attempt(self, params: FailStepAttemptParams) -> StepAttempt:
        """Fenced: mark the attempt failed (a repeat keeps the first error)."""
        values = self._owned(
            params.workflow_run_id,
            params.worker_id,
            step_id=params.step_attempt_id,
            error=ow_json.dumps_or_none(params.error),
            now=iso(clock.now()),
            claim_attempt=params.claim_attempt,
        )
        row = await self._run(lambda c: c.execute(q.FAIL_STEP_ATTEMPT, values).fetchone())
        return to_step(require(row, "mark step attempt failed"))

    async def set_step_attempt_child_workflow_run(
        self, params: SetStepAttemptChildWorkflowRunParams
    ) -> StepAttempt:
        """Fenced: link a running attempt to the child run it started."""
        values = self._owned(
            params.workflow_run_id,
            params.worker_id,
            step_id=params.step_attempt_id,
            child_ns=params.child_workflow_run_namespace_id,
            child_id=params.child_workflow_run_id,
            now=iso(clock.now()),
            claim_attempt=params.claim_attempt,
        )
        row = await self._run(lambda c: c.execute(q.SET_STEP_CHILD, values).fetchone())
        return to_step(require(row, "set step attempt child workflow run"))

    # -- signals -------------------------------------------------------------

    async def send_signal(self, params: SendSignalParams) -> SendSignalResult:
        """Deliver ``data`` once to every running wait on the signal, and wake those runs."""
        values: Params = {
            "ns": self._namespace_id,
            "signal": params.signal,
            "data": ow_json.dumps_or_none(params.data),
            "idempotency_key": params.idempotency_key,
        }

        def send(c: sqlite3.Connection) -> list[str]:
            values["now"] = iso(clock.now())
            return transaction(c, lambda: _deliver(c, values))

        delivered = await self._run(send)
        if delivered:
            self.notifier.notify_work_available()
        return SendSignalResult(workflow_run_ids=delivered)

    async def get_signal_delivery(self, params: GetSignalDeliveryParams) -> SignalDelivery | None:
        """Return what was delivered to a waiting attempt, or None."""
        values = {"ns": self._namespace_id, "step_id": params.step_attempt_id}
        row = await self._run(lambda c: c.execute(q.SELECT_SIGNAL_DELIVERY, values).fetchone())
        return None if row is None else SignalDelivery(data=ow_json.loads(row[0]))


def _deliver(c: sqlite3.Connection, values: Params) -> list[str]:
    """In the signal's transaction: deliver once to each waiter, wake their runs."""
    if values["idempotency_key"] is not None:
        earlier = c.execute(q.SELECT_SIGNAL_RUNS_BY_KEY, values).fetchall()
        if earlier:
            return [row[0] for row in earlier]
    delivered: list[str] = []
    for waiter in c.execute(q.SELECT_SIGNAL_WAITERS, values).fetchall():
        run_id = waiter["workflow_run_id"]
        delivery = {**values, "id": new_id(), "run_id": run_id, "step_id": waiter["id"]}
        inserted = c.execute(q.INSERT_SIGNAL_DELIVERY, delivery).rowcount
        if inserted and run_id not in delivered:
            delivered.append(run_id)
    for run_id in delivered:
        c.execute(q.WAKE_SIGNALED_RUN, {**values, "run_id": run_id})
    return delivered
