"""countWorkflowRuns (five buckets) and step-attempt counts (three), scoped to the namespace."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from openworkflow.core.backend import (
    CancelWorkflowRunParams,
    CompleteStepAttemptParams,
    CompleteWorkflowRunParams,
    FailStepAttemptParams,
    FailWorkflowRunParams,
    StepAttemptCounts,
    WorkflowRunCounts,
)
from tests.backend.helpers import (
    TERMINAL_RETRY_POLICY,
    claim,
    create_claimed_run,
    create_pending_run,
    create_step,
    new_id,
    now,
    park,
)


def _as_dict(counts: WorkflowRunCounts | StepAttemptCounts) -> dict[str, int]:
    return dataclasses.asdict(counts)


async def test_empty_backend_counts_zero_in_exactly_five_buckets(backend) -> None:
    counts = await backend.count_workflow_runs()

    assert isinstance(counts, WorkflowRunCounts)
    assert _as_dict(counts) == {
        "pending": 0,
        "running": 0,
        "completed": 0,
        "failed": 0,
        "canceled": 0,
    }


async def test_counts_group_runs_by_status_with_parked_runs_as_running(backend) -> None:
    await create_claimed_run(backend)  # running, owned

    parked = await create_claimed_run(backend)
    await park(backend, parked, now() + timedelta(minutes=1))

    completed = await create_claimed_run(backend)
    assert completed.worker_id is not None
    await backend.complete_workflow_run(
        CompleteWorkflowRunParams(
            workflow_run_id=completed.id, worker_id=completed.worker_id, output=None
        )
    )

    failed = await create_claimed_run(backend)
    assert failed.worker_id is not None
    await backend.fail_workflow_run(
        FailWorkflowRunParams(
            workflow_run_id=failed.id,
            worker_id=failed.worker_id,
            error={"message": "failed run"},
            retry_policy=TERMINAL_RETRY_POLICY,
        )
    )

    canceled = await create_pending_run(backend)
    await backend.cancel_workflow_run(CancelWorkflowRunParams(workflow_run_id=canceled.id))

    await create_pending_run(backend)

    assert _as_dict(await backend.count_workflow_runs()) == {
        "pending": 1,
        "running": 2,
        "completed": 1,
        "failed": 1,
        "canceled": 1,
    }


async def test_counts_follow_status_transitions(backend) -> None:
    pending = await create_pending_run(backend)
    counts = await backend.count_workflow_runs()
    assert (counts.pending, counts.running, counts.completed) == (1, 0, 0)

    worker_id = new_id()
    claimed = await claim(backend, worker_id, lease_ms=60_000)
    assert claimed is not None
    assert claimed.id == pending.id
    counts = await backend.count_workflow_runs()
    assert (counts.pending, counts.running, counts.completed) == (0, 1, 0)

    await backend.complete_workflow_run(
        CompleteWorkflowRunParams(workflow_run_id=pending.id, worker_id=worker_id, output=None)
    )
    counts = await backend.count_workflow_runs()
    assert (counts.pending, counts.running, counts.completed) == (0, 0, 1)


async def test_counts_only_see_their_own_namespace(backend, make_backend) -> None:
    other = make_backend(new_id())
    await create_pending_run(other)
    await create_pending_run(other)
    await create_pending_run(backend)

    assert (await backend.count_workflow_runs()).pending == 1
    assert (await other.count_workflow_runs()).pending == 2


async def test_step_attempt_counts_start_at_zero_in_three_buckets(backend) -> None:
    counts = await backend.count_step_attempts()

    assert isinstance(counts, StepAttemptCounts)
    assert _as_dict(counts) == {"running": 0, "completed": 0, "failed": 0}


async def test_step_attempt_counts_group_attempts_by_status(backend, make_backend) -> None:
    run = await create_claimed_run(backend)
    assert run.worker_id is not None
    await create_step(backend, run)  # stays running
    for _ in range(2):
        done = await create_step(backend, run)
        await backend.complete_step_attempt(
            CompleteStepAttemptParams(
                workflow_run_id=run.id, step_attempt_id=done.id, worker_id=run.worker_id, output=1
            )
        )
    broken = await create_step(backend, run)
    await backend.fail_step_attempt(
        FailStepAttemptParams(
            workflow_run_id=run.id,
            step_attempt_id=broken.id,
            worker_id=run.worker_id,
            error={"message": "boom"},
        )
    )
    other = make_backend(new_id())
    other_run = await create_claimed_run(other)
    await create_step(other, other_run)

    assert _as_dict(await backend.count_step_attempts()) == {
        "running": 1,
        "completed": 2,
        "failed": 1,
    }
    assert _as_dict(await other.count_step_attempts()) == {
        "running": 1,
        "completed": 0,
        "failed": 0,
    }
