"""cancelWorkflowRun: which runs can be canceled, what it writes, and what it wakes."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from openworkflow.core.backend import (
    CancelWorkflowRunParams,
    CompleteStepAttemptParams,
    CompleteWorkflowRunParams,
    FailWorkflowRunParams,
)
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import InvalidRunStateError, WorkflowRunNotFoundError, WriteConflictError
from tests.backend.helpers import (
    TERMINAL_RETRY_POLICY,
    claim,
    create_claimed_run,
    create_linked_child,
    create_pending_run,
    create_step,
    get_run,
    list_steps,
    new_id,
    now,
    park,
    seconds_from_now,
)


async def _cancel(backend, workflow_run_id: str) -> WorkflowRun:
    return await backend.cancel_workflow_run(
        CancelWorkflowRunParams(workflow_run_id=workflow_run_id)
    )


def _assert_canceled(run: WorkflowRun) -> None:
    assert run.status == "canceled"
    assert run.worker_id is None
    assert run.available_at is None
    assert run.finished_at is not None
    assert seconds_from_now(run.finished_at) < 1


async def test_cancel_a_pending_run(backend) -> None:
    created = await create_pending_run(backend, input={"x": 1})
    assert created.status == "pending"

    canceled = await _cancel(backend, created.id)

    _assert_canceled(canceled)
    assert canceled.id == created.id
    assert canceled.input == {"x": 1}
    assert canceled.attempts == 0
    assert await get_run(backend, created.id) == canceled


async def test_cancel_a_running_owned_run(backend) -> None:
    claimed = await create_claimed_run(backend, lease_ms=60_000)
    assert claimed.status == "running"
    assert claimed.worker_id is not None

    canceled = await _cancel(backend, claimed.id)

    _assert_canceled(canceled)
    assert canceled.attempts == 1


async def test_cancel_a_parked_run(backend) -> None:
    claimed = await create_claimed_run(backend)
    parked = await park(backend, claimed, now() + timedelta(minutes=1))
    assert parked.status == "running"
    assert parked.worker_id is None

    canceled = await _cancel(backend, parked.id)

    _assert_canceled(canceled)


async def test_cancel_a_completed_run_raises(backend) -> None:
    claimed = await create_claimed_run(backend)
    assert claimed.worker_id is not None
    await backend.complete_workflow_run(
        CompleteWorkflowRunParams(
            workflow_run_id=claimed.id, worker_id=claimed.worker_id, output={"result": "success"}
        )
    )

    with pytest.raises(
        InvalidRunStateError,
        match=re.escape(f"Cannot cancel workflow run {claimed.id} with status completed"),
    ):
        await _cancel(backend, claimed.id)

    assert (await get_run(backend, claimed.id)).status == "completed"


async def test_cancel_a_failed_run_raises(backend) -> None:
    claimed = await create_claimed_run(backend)
    assert claimed.worker_id is not None
    await backend.fail_workflow_run(
        FailWorkflowRunParams(
            workflow_run_id=claimed.id,
            worker_id=claimed.worker_id,
            error={"message": "test error"},
            retry_policy=TERMINAL_RETRY_POLICY,
        )
    )

    with pytest.raises(
        InvalidRunStateError,
        match=re.escape(f"Cannot cancel workflow run {claimed.id} with status failed"),
    ):
        await _cancel(backend, claimed.id)

    assert (await get_run(backend, claimed.id)).status == "failed"


async def test_cancel_a_deadline_expired_run_raises(backend) -> None:
    expired = await create_pending_run(backend, deadline_at=now() - timedelta(seconds=1))
    assert await claim(backend) is None  # the sweep fails it

    with pytest.raises(
        InvalidRunStateError,
        match=re.escape(f"Cannot cancel workflow run {expired.id} with status failed"),
    ):
        await _cancel(backend, expired.id)


async def test_cancel_twice_is_idempotent(backend) -> None:
    created = await create_pending_run(backend)

    first = await _cancel(backend, created.id)
    second = await _cancel(backend, created.id)

    assert first.status == "canceled"
    assert second.status == "canceled"
    assert second.id == first.id
    assert second.finished_at == first.finished_at


async def test_cancel_an_unknown_run_raises_not_found(backend) -> None:
    missing = new_id()

    with pytest.raises(WorkflowRunNotFoundError, match=f"Workflow run {missing} does not exist"):
        await _cancel(backend, missing)


async def test_cancel_does_not_reach_into_other_namespaces(backend, make_backend) -> None:
    other = make_backend(new_id())
    foreign = await create_pending_run(other)

    with pytest.raises(WorkflowRunNotFoundError, match=f"Workflow run {foreign.id} does not exist"):
        await _cancel(backend, foreign.id)

    assert (await get_run(other, foreign.id)).status == "pending"


async def test_canceled_run_is_never_claimed(backend) -> None:
    created = await create_pending_run(backend)

    await _cancel(backend, created.id)

    assert await claim(backend) is None


async def test_cancel_fences_the_worker_that_was_running_it(backend) -> None:
    claimed = await create_claimed_run(backend, lease_ms=60_000)
    assert claimed.worker_id is not None
    step = await create_step(backend, claimed)

    await _cancel(backend, claimed.id)

    with pytest.raises(WriteConflictError, match="Failed to mark step attempt completed"):
        await backend.complete_step_attempt(
            CompleteStepAttemptParams(
                workflow_run_id=claimed.id,
                step_attempt_id=step.id,
                worker_id=claimed.worker_id,
                output=1,
            )
        )
    with pytest.raises(WriteConflictError, match="Failed to create step attempt"):
        await create_step(backend, claimed)
    with pytest.raises(WriteConflictError, match="Failed to mark workflow run completed"):
        await backend.complete_workflow_run(
            CompleteWorkflowRunParams(
                workflow_run_id=claimed.id, worker_id=claimed.worker_id, output=1
            )
        )

    assert [s.id for s in await list_steps(backend, claimed.id)] == [step.id]
    assert (await get_run(backend, claimed.id)).status == "canceled"


async def test_canceling_a_child_wakes_its_parked_parent(backend) -> None:
    parent = await create_claimed_run(backend)
    _, child = await create_linked_child(backend, parent)
    far_future = now() + timedelta(minutes=5)
    await park(backend, parent, far_future)

    await _cancel(backend, child.id)

    parent_after = await get_run(backend, parent.id)
    assert parent_after.status == "running"
    assert parent_after.worker_id is None
    assert parent_after.available_at is not None
    assert parent_after.available_at <= now() + timedelta(seconds=5)


async def test_canceling_a_parent_leaves_its_child_alone(backend) -> None:
    parent = await create_claimed_run(backend)
    _, child = await create_linked_child(backend, parent)

    await _cancel(backend, parent.id)

    assert (await get_run(backend, child.id)).status == "pending"
