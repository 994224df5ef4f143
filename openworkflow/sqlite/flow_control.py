"""SQLite: flow control: run priority, paused workflows, worker registrations, rate limits.

The claims that honour them are in :mod:`~openworkflow.sqlite.runs`
(routing, pause, priority) and here (runs no live worker registered).
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta

from openworkflow.backend_common import require
from openworkflow.core import clock
from openworkflow.core import json as ow_json
from openworkflow.core.backend import (
    ClaimUnroutedWorkflowRunsParams,
    GetWorkflowRunParams,
    PausedWorkflow,
    SetWorkflowRunPriorityParams,
    WorkerRegistration,
)
from openworkflow.core.flow_control import (
    AcquireRateLimitParams,
    RateLimitGrant,
    RequeueWorkflowRunParams,
    SetWorkflowRunSuccessorParams,
)
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import InvalidRunStateError, WorkflowRunNotFoundError
from openworkflow.sqlite import flow_queries as fq
from openworkflow.sqlite import queries as q
from openworkflow.sqlite.admission import admit
from openworkflow.sqlite.base import iso, iso_or_none, to_run
from openworkflow.sqlite.connection import transaction
from openworkflow.sqlite.runs import lease
from openworkflow.sqlite.steps import SqliteSteps

FORGET_EXPIRED_WORKERS_AFTER = timedelta(days=1)
"""How long an expired registration is kept (for ``ow`` tools to show) before it is dropped."""


class SqliteFlowControl(SqliteSteps):
    """Priority changes, pause and resume, worker registrations, unrouted claims."""

    async def set_workflow_run_priority(self, params: SetWorkflowRunPriorityParams) -> WorkflowRun:
        """Change an active run's priority (higher is claimed first); return the run.

        Raises:
            WorkflowRunNotFoundError: no such run in the namespace.
            InvalidRunStateError: the run has finished.
        """
        values = {
            "ns": self._namespace_id,
            "run_id": params.workflow_run_id,
            "priority": params.priority,
            "now": iso(clock.now()),
        }
        row = await self._run(lambda c: c.execute(fq.SET_WORKFLOW_RUN_PRIORITY, values).fetchone())
        if row is not None:
            return to_run(row)
        run = await self.get_workflow_run(
            GetWorkflowRunParams(workflow_run_id=params.workflow_run_id)
        )
        if run is None:
            raise WorkflowRunNotFoundError(params.workflow_run_id)
        raise InvalidRunStateError(
            f"Cannot set the priority of workflow run {run.id}: it is {run.status}"
        )

    async def requeue_workflow_run(self, params: RequeueWorkflowRunParams) -> WorkflowRun:
        """Fenced: put an owned run back in the queue as if never claimed."""
        now = iso(clock.now())
        values = {
            "ns": self._namespace_id,
            "run_id": params.workflow_run_id,
            "worker_id": params.worker_id,
            "available_at": now if params.available_at is None else iso(params.available_at),
            "concurrency_key": params.concurrency_key,
            "concurrency_limit": params.concurrency_limit,
            "start_granted_at": iso_or_none(params.start_granted_at),
            "now": now,
        }
        row = await self._run(lambda c: c.execute(fq.REQUEUE_WORKFLOW_RUN, values).fetchone())
        run = to_run(require(row, "requeue workflow run"))
        self.notifier.notify_work_available()
        return run

    async def set_workflow_run_successor(
        self, params: SetWorkflowRunSuccessorParams
    ) -> WorkflowRun:
        """Fenced: record the run an owned run continues as."""
        values = {
            "ns": self._namespace_id,
            "run_id": params.workflow_run_id,
            "worker_id": params.worker_id,
            "successor_id": params.successor_id,
            "now": iso(clock.now()),
        }
        row = await self._run(lambda c: c.execute(fq.SET_WORKFLOW_RUN_SUCCESSOR, values).fetchone())
        return to_run(require(row, "set the successor of workflow run"))

    async def pause_workflow(self, workflow_name: str) -> PausedWorkflow:
        """Stop claims of the workflow's runs (every version); idempotent."""
        values = {"ns": self._namespace_id, "workflow_name": workflow_name, "now": iso(clock.now())}
        row = await self._run(lambda c: c.execute(fq.UPSERT_PAUSED_WORKFLOW, values).fetchone())
        return PausedWorkflow(workflow_name=row[0], paused_at=clock.from_iso(row[1]))

    async def resume_workflow(self, workflow_name: str) -> bool:
        """Let claims take the workflow's runs again; False if it was not paused."""
        values = {"ns": self._namespace_id, "workflow_name": workflow_name}
        deleted = await self._run(lambda c: c.execute(fq.DELETE_PAUSED_WORKFLOW, values).rowcount)
        if deleted:
            self.notifier.notify_work_available()  # its runs may be claimable now
        return bool(deleted)

    async def list_paused_workflows(self) -> list[PausedWorkflow]:
        """The paused workflow names, by name."""
        values = {"ns": self._namespace_id}
        rows = await self._run(lambda c: c.execute(fq.SELECT_PAUSED_WORKFLOWS, values).fetchall())
        return [
            PausedWorkflow(workflow_name=row[0], paused_at=clock.from_iso(row[1])) for row in rows
        ]

    async def register_worker(self, params: WorkerRegistration) -> None:
        """Record (or refresh) a live worker and the workflows it runs, live for ``ttl_ms``."""
        now = clock.now()
        values = {
            "ns": self._namespace_id,
            "worker_id": params.worker_id,
            "workflows": ow_json.dumps([[name, version] for name, version in params.workflows]),
            "now": iso(now),
            "expires_at": iso(now + timedelta(milliseconds=params.ttl_ms)),
            "forget_before": iso(now - FORGET_EXPIRED_WORKERS_AFTER),
        }

        def register(c: sqlite3.Connection) -> None:
            c.execute(fq.DELETE_FORGOTTEN_WORKER_REGISTRATIONS, values)
            c.execute(fq.UPSERT_WORKER_REGISTRATION, values)

        await self._run(lambda c: transaction(c, lambda: register(c)))

    async def unregister_worker(self, worker_id: str) -> None:
        """Forget a worker that stopped (idempotent)."""
        values = {"ns": self._namespace_id, "worker_id": worker_id}
        # .rowcount, not the cursor: a cursor must not leave the database thread.
        await self._run(lambda c: c.execute(fq.DELETE_WORKER_REGISTRATION, values).rowcount)

    async def claim_unrouted_workflow_runs(
        self, params: ClaimUnroutedWorkflowRunsParams
    ) -> list[WorkflowRun]:
        """Claim due runs no live worker registered for, one per worker id, in one transaction.

        Only among the ``scan_limit`` oldest due runs, so the
        search stays bounded whatever the backlog; runs of paused workflows
        are left alone.
        """
        worker_ids = list(params.worker_ids)
        if not worker_ids:
            return []

        def claim(c: sqlite3.Connection) -> list[WorkflowRun]:
            values = {
                **self._claim_values(params.lease_duration_ms),
                "scan_limit": params.scan_limit,
                "limit": len(worker_ids),
            }

            def body() -> list[WorkflowRun]:
                due = [(row[0], bool(row[1])) for row in c.execute(q.SELECT_UNROUTED, values)]
                due = admit(c, self._namespace_id, due, len(worker_ids))
                return lease(c, values, due, worker_ids)

            return transaction(c, body)

        return await self._run(claim)

    async def acquire_rate_limit(self, params: AcquireRateLimitParams) -> RateLimitGrant:
        """Take a token of the bucket and key, or say when the window has room.

        One ``BEGIN IMMEDIATE`` transaction (SQLite's single writer orders the
        grants), timed by ``clock.now()`` read inside it. Token rows are
        created in it too when missing: an ``INSERT OR IGNORE`` of at most
        ``limit`` rows, cheap next to the write lock itself.
        """
        values = self._rate_limit_values(params)
        per = timedelta(milliseconds=params.per_ms)

        def grant(c: sqlite3.Connection) -> RateLimitGrant:
            now = clock.now()
            values.update(now=iso(now), free_before=iso(now - per))
            c.execute(fq.INSERT_RATE_LIMIT_TOKENS, values)
            free = c.execute(fq.SELECT_FREE_RATE_LIMIT_TOKEN, values).fetchone()
            if free is not None:
                c.execute(fq.GRANT_RATE_LIMIT_TOKEN, {**values, "token": free[0]})
                return RateLimitGrant(granted=True, granted_at=now)
            oldest = c.execute(fq.SELECT_OLDEST_RATE_LIMIT_GRANT, values).fetchone()[0]
            # Every token is held, so each has a grant: the oldest leaves first.
            return RateLimitGrant(granted=False, retry_at=clock.from_iso(oldest) + per)

        return await self._run(lambda c: transaction(c, lambda: grant(c)))

    def _rate_limit_values(self, params: AcquireRateLimitParams) -> dict[str, object]:
        return {
            "ns": self._namespace_id,
            "bucket": params.bucket,
            "rate_key": params.key,
            "limit": params.limit,
            "run_id": params.workflow_run_id,
        }

    async def reserve_rate_limit(self, params: AcquireRateLimitParams) -> RateLimitGrant:
        """The instant the run may start: now, or a reserved one (see the protocol).

        One ``BEGIN IMMEDIATE`` transaction, timed by ``clock.now()`` read in it.
        """
        values = self._rate_limit_values(params)
        per = timedelta(milliseconds=params.per_ms)

        def reserve(c: sqlite3.Connection) -> RateLimitGrant:
            now = clock.now()
            values.update(now=iso(now))
            c.execute(fq.INSERT_RATE_LIMIT_TOKENS, values)
            token, last = c.execute(fq.SELECT_OLDEST_RATE_LIMIT_TOKEN, values).fetchone()
            at = now if last is None else max(now, clock.from_iso(last) + per)
            c.execute(fq.GRANT_RATE_LIMIT_TOKEN, {**values, "token": token, "now": iso(at)})
            if at <= now:
                return RateLimitGrant(granted=True, granted_at=at)
            return RateLimitGrant(granted=False, retry_at=at)

        return await self._run(lambda c: transaction(c, lambda: reserve(c)))
