"""Shared helpers of the backend conformance suite.

Everything here goes through the ``Backend`` protocol only, so the suite runs
unchanged against every backend the ``backend`` fixture is parametrized over.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import datetime, timedelta
from typing import Any

from openworkflow.core import clock
from openworkflow.core.backend import (
    ClaimWorkflowRunParams,
    CreateStepAttemptParams,
    CreateWorkflowRunParams,
    GetWorkflowRunParams,
    ListStepAttemptsParams,
    SetStepAttemptChildWorkflowRunParams,
    SleepWorkflowRunParams,
)
from openworkflow.core.retry import DEFAULT_WORKFLOW_RETRY_POLICY
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_run import WorkflowRun

LEASE_MS = 100
"""The short lease the suite claims with (upstream's "claimed run" helper)."""

RESCHEDULING_RETRY_POLICY = dataclasses.replace(DEFAULT_WORKFLOW_RETRY_POLICY, maximum_attempts=3)
"""Upstream's "default workflow policy with maximumAttempts 3"."""

TERMINAL_RETRY_POLICY = dataclasses.replace(DEFAULT_WORKFLOW_RETRY_POLICY, maximum_attempts=1)
"""Fails a run for good on its first failure."""


def now() -> datetime:
    """The application clock (shifted when a test uses the ``clock`` fixture)."""
    return clock.now()


def in_one_year() -> datetime:
    """A far-future instant, at millisecond precision like stored timestamps."""
    return now() + timedelta(days=365)


def ms_between(later: datetime, earlier: datetime) -> float:
    """Milliseconds from ``earlier`` to ``later``."""
    return (later - earlier).total_seconds() * 1000


def seconds_from_now(moment: datetime | None) -> float:
    """Absolute distance between ``moment`` and now, in seconds (inf for None)."""
    if moment is None:
        return float("inf")
    return abs((now() - moment).total_seconds())


def new_id() -> str:
    """A random UUID string, used for worker ids, names and keys."""
    return str(uuid.uuid4())


async def sleep_until_after(moment: datetime | None, margin_ms: int = 30) -> None:
    """Sleep until ``moment`` has passed, plus a small margin."""
    assert moment is not None, "expected a timestamp to wait for"
    delay = ms_between(moment, now()) + margin_ms
    if delay > 0:
        await asyncio.sleep(delay / 1000)


async def create_pending_run(backend: Any, **fields: Any) -> WorkflowRun:
    """Create a run with all defaults (a random workflow name), overridable per field."""
    fields.setdefault("workflow_name", new_id())
    return await backend.create_workflow_run(CreateWorkflowRunParams(**fields))


async def claim(
    backend: Any, worker_id: str | None = None, lease_ms: int = LEASE_MS
) -> WorkflowRun | None:
    """Claim the next available run with the given (or a random) worker."""
    return await backend.claim_workflow_run(
        ClaimWorkflowRunParams(worker_id=worker_id or new_id(), lease_duration_ms=lease_ms)
    )


async def create_claimed_run(
    backend: Any, worker_id: str | None = None, lease_ms: int = LEASE_MS, **fields: Any
) -> WorkflowRun:
    """Create a pending run, then claim it (checking the claim picked that very run)."""
    created = await create_pending_run(backend, **fields)
    claimed = await claim(backend, worker_id, lease_ms)
    assert claimed is not None, "expected the new run to be claimable"
    assert claimed.id == created.id, "another run was claimed instead of the new one"
    assert claimed.worker_id is not None
    return claimed


async def get_run(backend: Any, workflow_run_id: str) -> WorkflowRun:
    """Fetch a run that must exist."""
    run = await backend.get_workflow_run(GetWorkflowRunParams(workflow_run_id=workflow_run_id))
    assert run is not None, f"run {workflow_run_id} should exist"
    return run


async def create_step(
    backend: Any,
    run: WorkflowRun,
    *,
    step_name: str | None = None,
    kind: str = "function",
    config: Any = None,
    context: Any = None,
    worker_id: str | None = None,
) -> StepAttempt:
    """Create a step attempt on a run owned by ``worker_id`` (default: the run's owner)."""
    owner = worker_id or run.worker_id
    assert owner is not None, "the run has no owner to create the step with"
    return await backend.create_step_attempt(
        CreateStepAttemptParams(
            workflow_run_id=run.id,
            worker_id=owner,
            step_name=step_name or new_id(),
            kind=kind,
            config={} if config is None else config,
            context=context,
        )
    )


async def create_signal_wait(backend: Any, run: WorkflowRun, signal: str) -> StepAttempt:
    """Create a running ``signal-wait`` attempt on ``signal`` (timing out in a year)."""
    return await create_step(
        backend,
        run,
        step_name="wait-step",
        kind="signal-wait",
        context={
            "kind": "signal-wait",
            "signal": signal,
            "timeoutAt": clock.to_iso(in_one_year()),
        },
    )


async def park(backend: Any, run: WorkflowRun, available_at: datetime) -> WorkflowRun:
    """Park an owned run until ``available_at``."""
    assert run.worker_id is not None
    return await backend.sleep_workflow_run(
        SleepWorkflowRunParams(
            workflow_run_id=run.id, worker_id=run.worker_id, available_at=available_at
        )
    )


async def create_parked_signal_waiter(backend: Any, signal: str) -> tuple[WorkflowRun, StepAttempt]:
    """A claimed run with a running wait on ``signal``, parked for a year."""
    run = await create_claimed_run(backend)
    step = await create_signal_wait(backend, run, signal)
    await park(backend, run, in_one_year())
    return run, step


async def create_linked_child(
    backend: Any, parent: WorkflowRun, **fields: Any
) -> tuple[StepAttempt, WorkflowRun]:
    """Give an owned parent a running ``workflow`` step, a child run, and link them."""
    assert parent.worker_id is not None
    step = await create_step(
        backend, parent, kind="workflow", context={"kind": "workflow", "timeoutAt": None}
    )
    child = await create_pending_run(
        backend,
        parent_step_attempt_namespace_id=step.namespace_id,
        parent_step_attempt_id=step.id,
        **fields,
    )
    linked = await backend.set_step_attempt_child_workflow_run(
        SetStepAttemptChildWorkflowRunParams(
            workflow_run_id=parent.id,
            step_attempt_id=step.id,
            worker_id=parent.worker_id,
            child_workflow_run_namespace_id=child.namespace_id,
            child_workflow_run_id=child.id,
        )
    )
    return linked, child


async def list_steps(backend: Any, workflow_run_id: str) -> list[StepAttempt]:
    """Every step attempt of a run (one default-sized page)."""
    page = await backend.list_step_attempts(ListStepAttemptsParams(workflow_run_id=workflow_run_id))
    return page.data
