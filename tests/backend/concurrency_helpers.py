"""Helpers of the concurrency admission tests: keyed runs, claims, and who holds a key's slots.

Everything goes through the ``Backend`` protocol, so the tests run unchanged
on every backend the ``backend`` fixture is parametrized over.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from openworkflow.core.backend import (
    ClaimWorkflowRunsParams,
    CompleteWorkflowRunParams,
    ListWorkflowRunsParams,
    WorkflowKey,
)
from openworkflow.core.flow_control import ClaimUnroutedWorkflowRunsParams
from openworkflow.core.workflow_run import WorkflowRun
from tests.backend.helpers import create_pending_run, new_id, now

LONG_LEASE_MS = 60_000
"""A lease no test outlives: a claimed run keeps its slot until the test frees it."""


async def create_keyed_runs(
    backend: Any,
    count: int,
    *,
    workflow_name: str,
    key: str | None,
    limit: int | None,
    seconds_ago: float,
    version: str | None = None,
) -> list[WorkflowRun]:
    """``count`` pending runs of one key (None: unlimited), in claim order.

    Each run is due ``seconds_ago`` seconds ago minus its index in
    milliseconds, so runs created by several calls sort by ``seconds_ago``
    first (older goes first) and within a call by creation.
    """
    base = now() - timedelta(seconds=seconds_ago)
    return [
        await create_pending_run(
            backend,
            workflow_name=workflow_name,
            version=version,
            concurrency_key=key,
            concurrency_limit=limit,
            available_at=base + timedelta(milliseconds=index),
        )
        for index in range(count)
    ]


async def claim_slots(
    backend: Any,
    slots: int,
    *,
    workflows: Sequence[WorkflowKey] | None = None,
    lease_ms: int = LONG_LEASE_MS,
    enforce: bool = True,
) -> list[WorkflowRun]:
    """One claim with ``slots`` fresh worker ids (routed to ``workflows``; None: any)."""
    return list(
        await backend.claim_workflow_runs(
            ClaimWorkflowRunsParams(
                worker_ids=[new_id() for _ in range(slots)],
                lease_duration_ms=lease_ms,
                workflows=workflows,
                enforce_concurrency=enforce,
            )
        )
    )


async def claim_unrouted_slots(backend: Any, slots: int) -> list[WorkflowRun]:
    """One unrouted claim (runs no live worker registered) with ``slots`` worker ids."""
    return list(
        await backend.claim_unrouted_workflow_runs(
            ClaimUnroutedWorkflowRunsParams(
                worker_ids=[new_id() for _ in range(slots)], lease_duration_ms=LONG_LEASE_MS
            )
        )
    )


async def complete(backend: Any, run: WorkflowRun) -> WorkflowRun:
    """Complete a run its claim leased."""
    assert run.worker_id is not None, "only a leased run can be completed"
    completed: WorkflowRun = await backend.complete_workflow_run(
        CompleteWorkflowRunParams(workflow_run_id=run.id, worker_id=run.worker_id, output=None)
    )
    return completed


async def all_runs(backend: Any) -> list[WorkflowRun]:
    """Every run of the namespace, paging through the list."""
    runs: list[WorkflowRun] = []
    after: str | None = None
    while True:
        page = await backend.list_workflow_runs(ListWorkflowRunsParams(limit=100, after=after))
        runs.extend(page.data)
        after = page.next
        if after is None:
            return runs


def leased_per_key(runs: Sequence[WorkflowRun]) -> Counter[tuple[str, str | None]]:
    """How many runs of each (workflow, key) are running and leased: the slots held."""
    return Counter(
        (run.workflow_name, run.concurrency_key)
        for run in runs
        if run.status == "running" and run.worker_id is not None
    )


def ids(runs: Sequence[WorkflowRun]) -> list[str]:
    """The ids of ``runs``, in order."""
    return [run.id for run in runs]
