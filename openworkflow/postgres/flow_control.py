"""PostgreSQL: flow control: run priority, paused workflows, worker registrations.

The claims that honour them are in :mod:`~openworkflow.postgres.runs`
(routing, pause, priority) and here (runs no live worker registered).
"""

from __future__ import annotations

from openworkflow.core.backend import (
    ClaimUnroutedWorkflowRunsParams,
    GetWorkflowRunParams,
    PausedWorkflow,
    SetWorkflowRunPriorityParams,
    WorkerRegistration,
)
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import InvalidRunStateError, WorkflowRunNotFoundError
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
