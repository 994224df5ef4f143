"""Flow control that is not SQL: priorities, routing keys, and the backend params for them.

A run's priority orders the claim among due pending runs: higher first, then
the earliest due. It is a 32-bit integer so every backend stores it as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from openworkflow.core.workflow_run import WorkflowRun

DEFAULT_PRIORITY = 0
"""A run's priority unless its workflow or its ``run()`` call says otherwise."""

MIN_PRIORITY = -(2**31)
MAX_PRIORITY = 2**31 - 1


def check_priority(value: object, where: str) -> int:
    """``value`` if it is a usable priority, else a ``TypeError``/``ValueError`` saying why.

    ``where`` names the caller's argument in the message (``"priority"``,
    ``"@workflow(priority=...)"``).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where} must be an integer, got {value!r}")
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise ValueError(
            f"{where} must be between {MIN_PRIORITY} and {MAX_PRIORITY} (higher runs first), "
            f"got {value}"
        )
    return value


WorkflowKey = tuple[str, str | None]
"""A workflow implementation's (name, version); a None version matches unversioned runs only."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SetWorkflowRunPriorityParams:
    """Input of :meth:`Backend.set_workflow_run_priority`."""

    workflow_run_id: str
    priority: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PausedWorkflow:
    """A workflow name whose runs workers do not claim (every version, in the namespace)."""

    workflow_name: str
    paused_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerRegistration:
    """Input of :meth:`Backend.register_worker`: a live worker and what it runs.

    ``worker_id`` names the worker process (not a slot); the registration is
    live until ``ttl_ms`` after the last call.
    """

    worker_id: str
    workflows: Sequence[WorkflowKey]
    ttl_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimUnroutedWorkflowRunsParams:
    """Input of :meth:`Backend.claim_unrouted_workflow_runs`.

    Claims due runs (pending, parked and due, or with an expired lease) whose
    (name, version) no live registered worker runs and whose workflow is not
    paused, among the ``scan_limit`` oldest due runs of the three kinds
    together, one per worker id, so a worker can say that nobody knows them.
    """

    worker_ids: Sequence[str]
    lease_duration_ms: int
    scan_limit: int = 1000


class FlowControlStore(Protocol):
    """The storage side of flow control, part of every :class:`~openworkflow.core.backend.Backend`.

    This port's own: TypeScript workers sharing the database ignore priorities,
    pauses and registrations.
    """

    async def set_workflow_run_priority(self, params: SetWorkflowRunPriorityParams) -> WorkflowRun:
        """Change an active run's priority (higher is claimed first); return the run.

        Raises :class:`~openworkflow.errors.WorkflowRunNotFoundError` for an
        unknown run and :class:`~openworkflow.errors.InvalidRunStateError` for
        a finished one.
        """
        ...

    async def pause_workflow(self, workflow_name: str) -> PausedWorkflow:
        """Stop claims of the workflow's runs (every version); idempotent."""
        ...

    async def resume_workflow(self, workflow_name: str) -> bool:
        """Let claims take the workflow's runs again; False if it was not paused."""
        ...

    async def list_paused_workflows(self) -> list[PausedWorkflow]:
        """The paused workflow names, by name."""
        ...

    async def register_worker(self, params: WorkerRegistration) -> None:
        """Record (or refresh) a live worker and the workflows it runs."""
        ...

    async def unregister_worker(self, worker_id: str) -> None:
        """Forget a worker that stopped (idempotent)."""
        ...

    async def claim_unrouted_workflow_runs(
        self, params: ClaimUnroutedWorkflowRunsParams
    ) -> list[WorkflowRun]:
        """Claim due runs no live worker registered for (see the params)."""
        ...
