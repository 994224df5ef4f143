"""SQLite: the writes that end a run or send it back (complete, fail, cancel, retry).

Every terminal transition closes the run's running step attempts and wakes
a parent waiting on it, in the transaction that finishes the run.
Completions are group-committed: those of concurrent executions share one
transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from openworkflow.backend_common import decide_conflict, require
from openworkflow.core import clock
from openworkflow.core import json as ow_json
from openworkflow.core.backend import (
    CancelWorkflowRunParams,
    CompleteWorkflowRunParams,
    FailWorkflowRunParams,
    GetWorkflowRunParams,
    RescheduleWorkflowRunAfterFailedStepAttemptParams,
    RetryWorkflowRunParams,
)
from openworkflow.core.retry import compute_failed_workflow_run_update
from openworkflow.core.workflow_run import (
    WorkflowRun,
    WorkflowRunStatus,
    resolve_cancel_conflict,
    resolve_retry_conflict,
)
from openworkflow.errors import WriteConflictError
from openworkflow.group_commit import GroupCommit
from openworkflow.sqlite import queries as q
from openworkflow.sqlite.base import (
    Params,
    close_open_step_attempts,
    iso,
    iso_or_none,
    to_run,
    wake_parent,
)
from openworkflow.sqlite.connection import transaction, write_each
from openworkflow.sqlite.runs import SqliteRuns

T = TypeVar("T")


# The claim fence (:data:`queries.CLAIM_HELD`) for the writes that end a run,
# whose statements fence on the worker id alone (step writes carry it in their
# statement): checked first inside the write's transaction (BEGIN IMMEDIATE
# holds the database's write lock, so no claim can slip in between).
_CLAIM_HELD = f"""
SELECT 1 FROM "workflow_runs" WHERE {q.RUN_OWNED} AND "attempts" = :claim_attempt"""


def check_claim(c: sqlite3.Connection, values: Params) -> None:
    """Refuse the write unless its claim still holds the run (no claim: nothing to check).

    Call inside the write's transaction; ``values`` holds the fence's names.
    """
    if values.get("claim_attempt") is None:
        return
    if c.execute(_CLAIM_HELD, values).fetchone() is None:
        raise WriteConflictError(f"workflow run {values['run_id']} is no longer held by this claim")


def fenced_write(c: sqlite3.Connection, values: Params, write: Callable[[], T]) -> T:
    """Run one write statement under ``values``' fence: with a claim, in a transaction."""
    if values.get("claim_attempt") is None:
        return write()  # the statement's own fence on the worker id suffices

    def body() -> T:
        check_claim(c, values)
        return write()

    return transaction(c, body)


@dataclass(frozen=True, slots=True)
class Completion:
    """One run completion waiting for its group-commit batch."""

    values: dict[str, Any]
    now: str


class SqliteFinishing(SqliteRuns):
    """Completing, failing, rescheduling, canceling and retrying runs."""

    _completions: GroupCommit[Completion, WorkflowRun]

    async def complete_workflow_run(self, params: CompleteWorkflowRunParams) -> WorkflowRun:
        """Fenced: mark the run completed and wake its parent (group-committed)."""
        now = iso(clock.now())
        values = self._owned(
            params.workflow_run_id,
            params.worker_id,
            output=ow_json.dumps_or_none(params.output),
            now=now,
            claim_attempt=params.claim_attempt,
        )
        run = await self._completions.submit(Completion(values, now))
        self._notify_finished(run)
        return run

    async def _write_completions(
        self, completions: Sequence[Completion]
    ) -> list[WorkflowRun | BaseException]:
        """Group commit: the completions of concurrent executions in one transaction."""

        def complete(c: sqlite3.Connection, item: Completion) -> WorkflowRun:
            check_claim(c, item.values)
            row = require(
                c.execute(q.COMPLETE_WORKFLOW_RUN, item.values).fetchone(),
                "mark workflow run completed",
            )
            run = to_run(row)
            wake_parent(c, run, item.now)
            return run

        def close_attempts(
            c: sqlite3.Connection, outcomes: list[WorkflowRun | BaseException]
        ) -> None:
            # One statement for the whole batch, not one per completed run.
            runs = [run for run in outcomes if isinstance(run, WorkflowRun)]
            if runs:
                close_open_step_attempts(c, self._namespace_id, runs, completions[0].now)

        return await self._run(
            lambda c: write_each(c, completions, complete, lambda o: close_attempts(c, o))
        )

    async def fail_workflow_run(self, params: FailWorkflowRunParams) -> WorkflowRun:
        """Fenced: apply the retry decision; a terminal failure wakes the parent."""
        attempts, deadline_at = params.attempts, params.deadline_at
        if attempts is None:
            current = await self.get_workflow_run(
                GetWorkflowRunParams(workflow_run_id=params.workflow_run_id)
            )
            if current is None:
                raise WriteConflictError("Failed to mark workflow run failed")
            attempts, deadline_at = current.attempts, current.deadline_at
        now_dt = clock.now()
        update = compute_failed_workflow_run_update(
            params.retry_policy, attempts, deadline_at, params.error, now_dt
        )
        now = iso(now_dt)
        values = self._owned(
            params.workflow_run_id,
            params.worker_id,
            status=update.status,
            available_at=iso_or_none(update.available_at),
            finished_at=iso_or_none(update.finished_at),
            error=ow_json.dumps_or_none(update.error),
            now=now,
            claim_attempt=params.claim_attempt,
        )

        def fail(c: sqlite3.Connection) -> WorkflowRun:
            def body() -> WorkflowRun:
                check_claim(c, values)
                row = require(
                    c.execute(q.FAIL_WORKFLOW_RUN, values).fetchone(), "mark workflow run failed"
                )
                run = to_run(row)
                if run.status == WorkflowRunStatus.FAILED:
                    close_open_step_attempts(c, self._namespace_id, [run], now)
                    wake_parent(c, run, now)
                return run

            return transaction(c, body)

        run = await self._run(fail)
        if run.status == WorkflowRunStatus.FAILED:
            self._notify_finished(run)
        return run

    async def reschedule_workflow_run_after_failed_step_attempt(
        self, params: RescheduleWorkflowRunAfterFailedStepAttemptParams
    ) -> WorkflowRun:
        """Fenced: send the run back to pending until ``available_at``."""
        values = self._owned(
            params.workflow_run_id,
            params.worker_id,
            available_at=iso(params.available_at),
            error=ow_json.dumps_or_none(params.error),
            now=iso(clock.now()),
            claim_attempt=params.claim_attempt,
        )
        row = await self._run(
            lambda c: fenced_write(
                c, values, lambda: c.execute(q.RESCHEDULE_AFTER_FAILED_STEP, values).fetchone()
            )
        )
        return to_run(require(row, "reschedule workflow run after failed step attempt"))

    async def cancel_workflow_run(self, params: CancelWorkflowRunParams) -> WorkflowRun:
        """Cancel an active run (idempotently) and wake its parent."""
        now = iso(clock.now())
        values = {"now": now, "ns": self._namespace_id, "run_id": params.workflow_run_id}

        def cancel(c: sqlite3.Connection) -> WorkflowRun | None:
            def body() -> WorkflowRun | None:
                row = c.execute(q.CANCEL_WORKFLOW_RUN, values).fetchone()
                if row is None:
                    return None
                run = to_run(row)
                close_open_step_attempts(c, self._namespace_id, [run], now)
                wake_parent(c, run, now)
                return run

            return transaction(c, body)

        canceled = await self._run(cancel)
        if canceled is not None:
            self._notify_finished(canceled)
            return canceled
        return await decide_conflict(
            self.get_workflow_run, params.workflow_run_id, resolve_cancel_conflict
        )

    async def retry_workflow_run(self, params: RetryWorkflowRunParams) -> WorkflowRun:
        """Put a failed or canceled run back to pending; failed steps will run again."""
        values = {
            "now": iso(clock.now()),
            "ns": self._namespace_id,
            "run_id": params.workflow_run_id,
        }

        def retry(c: sqlite3.Connection) -> WorkflowRun | None:
            def body() -> WorkflowRun | None:
                row = c.execute(q.RETRY_WORKFLOW_RUN, values).fetchone()
                if row is None:
                    return None
                c.execute(q.DELETE_ATTEMPTS_TO_RERUN, values)
                return to_run(row)

            return transaction(c, body)

        retried = await self._run(retry)
        if retried is None:
            return await decide_conflict(
                self.get_workflow_run, params.workflow_run_id, resolve_retry_conflict
            )
        self.notifier.notify_work_available()
        return retried
