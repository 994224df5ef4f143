"""PostgreSQL: flow control: run priority, paused workflows, worker registrations, rate limits.

The claims that honour them are in :mod:`~openworkflow.postgres.runs`
(routing, pause, priority) and here (runs no live worker registered).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from openworkflow.backend_common import require
from openworkflow.core import clock
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
from openworkflow.errors import BackendError, InvalidRunStateError, WorkflowRunNotFoundError
from openworkflow.postgres.base import jsonb, load_time, to_run
from openworkflow.postgres.runs import claimed_runs
from openworkflow.postgres.steps import PostgresSteps


class PostgresFlowControl(PostgresSteps):
    """Priority changes, pause and resume, worker registrations, unrouted claims."""

    async def set_workflow_run_priority(self, params: SetWorkflowRunPriorityParams) -> WorkflowRun:
        """Change an active run's priority (higher is claimed first); return the run.

        Raises:
            WorkflowRunNotFoundError: no such run in the namespace.
            InvalidRunStateError: the run has finished.
        """
        values = self._params(run_id=params.workflow_run_id, priority=params.priority)
        row = await self._fetchone(self._q.set_workflow_run_priority, values)
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
        values = self._owned(
            params.workflow_run_id,
            params.worker_id,
            available_at=params.available_at,
            concurrency_key=params.concurrency_key,
            concurrency_limit=params.concurrency_limit,
            start_granted_at=params.start_granted_at,
        )
        row = await self._fetchone(self._q.requeue_workflow_run, values)
        return to_run(require(row, "requeue workflow run"))

    async def set_workflow_run_successor(
        self, params: SetWorkflowRunSuccessorParams
    ) -> WorkflowRun:
        """Fenced: record the run an owned run continues as."""
        values = self._owned(
            params.workflow_run_id, params.worker_id, successor_id=params.successor_id
        )
        row = await self._fetchone(self._q.set_workflow_run_successor, values)
        return to_run(require(row, "set the successor of workflow run"))

    async def pause_workflow(self, workflow_name: str) -> PausedWorkflow:
        """Stop claims of the workflow's runs (every version); idempotent."""
        values = self._params(workflow_name=workflow_name)
        row = await self._fetchone(self._q.upsert_paused_workflow, values)
        assert row is not None  # an upsert always returns its row
        return PausedWorkflow(workflow_name=row[0], paused_at=load_time(row[1]))

    async def resume_workflow(self, workflow_name: str) -> bool:
        """Let claims take the workflow's runs again; False if it was not paused."""
        values = self._params(workflow_name=workflow_name)
        return await self._fetchone(self._q.delete_paused_workflow, values) is not None

    async def list_paused_workflows(self) -> list[PausedWorkflow]:
        """The paused workflow names, by name."""
        rows = await self._read_all(self._q.select_paused_workflows, self._params())
        return [PausedWorkflow(workflow_name=row[0], paused_at=load_time(row[1])) for row in rows]

    async def register_worker(self, params: WorkerRegistration) -> None:
        """Record (or refresh) a live worker and the workflows it runs, live for ``ttl_ms``."""
        values = self._params(
            worker_id=params.worker_id,
            workflows=jsonb([[name, version] for name, version in params.workflows]),
            ttl_ms=params.ttl_ms,
        )
        async with self._connection() as connection:
            await connection.execute(self._q.upsert_worker_registration, values)

    async def unregister_worker(self, worker_id: str) -> None:
        """Forget a worker that stopped (idempotent)."""
        async with self._connection() as connection:
            await connection.execute(
                self._q.delete_worker_registration, self._params(worker_id=worker_id)
            )

    async def claim_unrouted_workflow_runs(
        self, params: ClaimUnroutedWorkflowRunsParams
    ) -> list[WorkflowRun]:
        """Claim due runs no live worker registered for, one per worker id, in one statement.

        Only among the ``scan_limit`` oldest due runs, so the
        search stays bounded whatever the backlog; runs of paused workflows
        are left alone.
        """
        worker_ids = list(params.worker_ids)
        if not worker_ids:
            return []
        values = self._claim_params(worker_ids, params.lease_duration_ms)
        values["scan_limit"] = params.scan_limit
        return claimed_runs(await self._fetchall(self._q.claim_unrouted_workflow_runs, values))

    async def acquire_rate_limit(self, params: AcquireRateLimitParams) -> RateLimitGrant:
        """Take a token of the bucket and key in one statement, or say when the window has room.

        The bucket's token rows are created the first time this backend uses
        it (and again if a refusal finds fewer rows than the limit: rows may
        have been pruned, or the limit raised).
        """
        insert, acquire = self._q.insert_rate_limit_tokens, self._q.acquire_rate_limit_token
        values = await self._rate_limit_values(params)
        room_at: datetime | None = None
        now: datetime | None = None  # the database's NOW(), never this host's clock
        for _ in range(_RATE_LIMIT_TRIES):
            row = await self._fetchone(acquire, values)
            assert row is not None  # the statement always returns one row
            granted_at, room_at, tokens, now = row
            if granted_at is not None:
                return RateLimitGrant(granted=True, granted_at=load_time(granted_at))
            if tokens < params.limit:
                await self._execute_rate_limit(insert, values)
            elif room_at is not None and room_at > now:
                break
            # Else every free token was locked by racing callers: ask again.
        assert now is not None  # the loop read at least one row
        retry_at = room_at if room_at is not None and room_at > now else now
        return RateLimitGrant(granted=False, retry_at=_ceil_ms(retry_at))

    async def reserve_rate_limit(self, params: AcquireRateLimitParams) -> RateLimitGrant:
        """The instant the run may start: now, or a reserved one (see the protocol)."""
        insert, reserve = self._q.insert_rate_limit_tokens, self._q.reserve_rate_limit_token
        values = await self._rate_limit_values(params)
        for _ in range(_RATE_LIMIT_TRIES):
            row = await self._fetchone(reserve, values)
            assert row is not None  # the statement always returns one row
            reserved_at, now = row
            if reserved_at is not None:
                at = load_time(reserved_at)
                if reserved_at <= now:
                    return RateLimitGrant(granted=True, granted_at=at)
                return RateLimitGrant(granted=False, retry_at=at)
            # No token row (pruned): create them.
            await self._execute_rate_limit(insert, values)
        raise BackendError(f"rate limit tokens of {params.bucket!r} could not be created")

    async def _rate_limit_values(self, params: AcquireRateLimitParams) -> dict[str, Any]:
        """The statements' values; the bucket's token rows are created on its first use here."""
        values = self._params(
            bucket=params.bucket,
            rate_key=params.key,
            limit=params.limit,
            per_ms=params.per_ms,
            run_id=params.workflow_run_id,
        )
        scope = (params.bucket, params.key, params.limit)
        if scope not in self._db.rate_limit_scopes:
            await self._execute_rate_limit(self._q.insert_rate_limit_tokens, values)
            self._db.rate_limit_scopes.add(scope)
        return values

    async def _execute_rate_limit(self, query: bytes, values: dict[str, object]) -> None:
        async with self._connection() as connection:
            await connection.execute(query, values)


_RATE_LIMIT_TRIES = 3
"""Statements one acquisition may take (token rows missing, free tokens all locked)."""


def _ceil_ms(value: datetime) -> datetime:
    """``value`` in UTC rounded up to the millisecond: never earlier than the room."""
    return clock.truncate_ms(value.astimezone(UTC) + timedelta(microseconds=999))
