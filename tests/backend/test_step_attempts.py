"""Step attempts: create, get, link a child, complete, fail, and ownership fencing."""

from __future__ import annotations

import pytest

from openworkflow.core.backend import (
    CompleteStepAttemptParams,
    CompleteWorkflowRunParams,
    CreateStepAttemptParams,
    FailStepAttemptParams,
    GetStepAttemptParams,
    SetStepAttemptChildWorkflowRunParams,
)
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import WriteConflictError
from tests.backend.helpers import (
    claim,
    create_claimed_run,
    create_pending_run,
    create_step,
    in_one_year,
    list_steps,
    new_id,
    park,
    seconds_from_now,
    sleep_until_after,
)


async def _get_step(backend, step_attempt_id: str) -> StepAttempt | None:
    return await backend.get_step_attempt(GetStepAttemptParams(step_attempt_id=step_attempt_id))


async def _complete_step(
    backend, run: WorkflowRun, step_attempt_id: str, output: object, worker_id: str | None = None
) -> StepAttempt:
    owner = worker_id or run.worker_id
    assert owner is not None
    return await backend.complete_step_attempt(
        CompleteStepAttemptParams(
            workflow_run_id=run.id, step_attempt_id=step_attempt_id, worker_id=owner, output=output
        )
    )


async def _fail_step(
    backend, run: WorkflowRun, step_attempt_id: str, error: object, worker_id: str | None = None
) -> StepAttempt:
    owner = worker_id or run.worker_id
    assert owner is not None
    return await backend.fail_step_attempt(
        FailStepAttemptParams(
            workflow_run_id=run.id, step_attempt_id=step_attempt_id, worker_id=owner, error=error
        )
    )


async def _link_child(
    backend, run: WorkflowRun, step: StepAttempt, child: WorkflowRun, worker_id: str | None = None
) -> StepAttempt:
    owner = worker_id or run.worker_id
    assert owner is not None
    return await backend.set_step_attempt_child_workflow_run(
        SetStepAttemptChildWorkflowRunParams(
            workflow_run_id=run.id,
            step_attempt_id=step.id,
            worker_id=owner,
            child_workflow_run_namespace_id=child.namespace_id,
            child_workflow_run_id=child.id,
        )
    )


async def _child_of(backend, step: StepAttempt) -> WorkflowRun:
    return await create_pending_run(
        backend,
        parent_step_attempt_namespace_id=step.namespace_id,
        parent_step_attempt_id=step.id,
        available_at=in_one_year(),  # keep it out of the way of later claims
    )


# -- createStepAttempt --------------------------------------------------------------


async def test_create_step_attempt_stores_a_running_attempt(backend) -> None:
    run = await create_claimed_run(backend)
    assert run.worker_id is not None
    step_name = new_id()

    created = await backend.create_step_attempt(
        CreateStepAttemptParams(
            workflow_run_id=run.id,
            worker_id=run.worker_id,
            step_name=step_name,
            kind="function",
            config={"key": "val"},
            context={"kind": "sleep", "resumeAt": "2030-01-01T00:00:00.000Z"},
        )
    )

    assert len(created.id) == 36
    assert seconds_from_now(created.started_at) < 1
    assert seconds_from_now(created.created_at) < 1
    assert seconds_from_now(created.updated_at) < 1
    assert created == StepAttempt(
        namespace_id=backend.namespace_id,
        id=created.id,
        workflow_run_id=run.id,
        step_name=step_name,
        kind="function",
        status="running",
        config={"key": "val"},
        context={"kind": "sleep", "resumeAt": "2030-01-01T00:00:00.000Z"},
        output=None,
        error=None,
        child_workflow_run_namespace_id=None,
        child_workflow_run_id=None,
        started_at=created.started_at,
        finished_at=None,
        created_at=created.created_at,
        updated_at=created.updated_at,
    )


@pytest.mark.parametrize("kind", ["function", "sleep", "workflow", "signal-send", "signal-wait"])
async def test_create_step_attempt_accepts_every_kind(backend, kind: str) -> None:
    run = await create_claimed_run(backend)

    created = await create_step(backend, run, kind=kind, context=None)

    assert created.kind == kind
    assert created.context is None
    assert created.config == {}


async def test_create_step_attempt_is_refused_to_a_non_owner(backend) -> None:
    run = await create_claimed_run(backend)

    with pytest.raises(WriteConflictError, match="Failed to create step attempt"):
        await create_step(backend, run, worker_id=new_id())

    assert await list_steps(backend, run.id) == []


async def test_create_step_attempt_fails_once_the_run_is_parked(backend) -> None:
    run = await create_claimed_run(backend)
    await park(backend, run, in_one_year())

    with pytest.raises(WriteConflictError, match="Failed to create step attempt"):
        await create_step(backend, run)

    assert await list_steps(backend, run.id) == []


async def test_create_step_attempt_fails_for_pending_and_unknown_runs(backend) -> None:
    pending = await create_pending_run(backend, available_at=in_one_year())

    with pytest.raises(WriteConflictError, match="Failed to create step attempt"):
        await create_step(backend, pending, worker_id=new_id())
    assert await list_steps(backend, pending.id) == []

    with pytest.raises(WriteConflictError, match="Failed to create step attempt"):
        await backend.create_step_attempt(
            CreateStepAttemptParams(
                workflow_run_id=new_id(), worker_id=new_id(), step_name="x", kind="function"
            )
        )


# -- getStepAttempt -------------------------------------------------------------------


async def test_get_step_attempt_returns_the_created_row(backend) -> None:
    run = await create_claimed_run(backend)
    created = await create_step(backend, run, config={"a": [1, 2]}, context={"b": None})

    assert await _get_step(backend, created.id) == created


async def test_get_step_attempt_returns_none_for_unknown_or_foreign_ids(
    backend, make_backend
) -> None:
    assert await _get_step(backend, new_id()) is None

    other = make_backend(new_id())
    run = await create_claimed_run(other)
    foreign = await create_step(other, run)
    assert await _get_step(backend, foreign.id) is None
    assert await _get_step(other, foreign.id) == foreign


# -- setStepAttemptChildWorkflowRun -----------------------------------------------------


async def test_link_child_sets_the_linkage(backend) -> None:
    parent = await create_claimed_run(backend)
    step = await create_step(backend, parent, kind="workflow")
    child = await _child_of(backend, step)

    updated = await _link_child(backend, parent, step, child)

    assert updated.child_workflow_run_namespace_id == child.namespace_id
    assert updated.child_workflow_run_id == child.id
    assert updated.status == "running"
    assert updated.id == step.id
    fetched = await _get_step(backend, step.id)
    assert fetched == updated


async def test_link_child_is_refused_to_a_non_owner(backend) -> None:
    parent = await create_claimed_run(backend)
    step = await create_step(backend, parent, kind="workflow")
    child = await _child_of(backend, step)

    with pytest.raises(WriteConflictError, match="Failed to set step attempt child workflow run"):
        await _link_child(backend, parent, step, child, worker_id=new_id())

    assert await _get_step(backend, step.id) == step


async def test_link_child_is_refused_once_the_attempt_is_no_longer_running(backend) -> None:
    parent = await create_claimed_run(backend)
    step = await create_step(backend, parent, kind="workflow")
    completed = await _complete_step(backend, parent, step.id, {"ok": True})
    child = await _child_of(backend, step)

    with pytest.raises(WriteConflictError, match="Failed to set step attempt child workflow run"):
        await _link_child(backend, parent, step, child)

    assert await _get_step(backend, step.id) == completed


# -- completeStepAttempt ---------------------------------------------------------------


async def test_complete_step_attempt_marks_it_completed_idempotently(backend) -> None:
    run = await create_claimed_run(backend)
    created = await create_step(backend, run)

    completed = await _complete_step(backend, run, created.id, {"foo": "bar"})

    assert completed.status == "completed"
    assert completed.output == {"foo": "bar"}
    assert completed.error is None
    assert completed.finished_at is not None
    assert seconds_from_now(completed.finished_at) < 1
    assert completed.started_at == created.started_at
    assert completed.created_at == created.created_at

    again = await _complete_step(backend, run, created.id, {"foo": "bar"})
    assert again == completed

    fetched = await _get_step(backend, created.id)
    assert fetched == completed


async def test_complete_step_attempt_repeat_keeps_the_first_output(backend) -> None:
    run = await create_claimed_run(backend)
    created = await create_step(backend, run)
    first = await _complete_step(backend, run, created.id, "first")

    again = await _complete_step(backend, run, created.id, "second")

    assert again == first
    assert again.output == "first"


async def test_complete_step_attempt_stores_a_null_output(backend) -> None:
    run = await create_claimed_run(backend)
    created = await create_step(backend, run)

    completed = await _complete_step(backend, run, created.id, None)

    assert completed.status == "completed"
    assert completed.output is None


async def test_complete_step_attempt_fails_once_the_run_is_not_running(backend) -> None:
    run = await create_claimed_run(backend)
    step = await create_step(backend, run)
    assert run.worker_id is not None
    await backend.complete_workflow_run(
        CompleteWorkflowRunParams(workflow_run_id=run.id, worker_id=run.worker_id, output=None)
    )

    with pytest.raises(WriteConflictError, match="Failed to mark step attempt completed"):
        await _complete_step(backend, run, step.id, {"foo": "bar"})

    # As the completion closed it (a finished run keeps no attempt running).
    closed = await _get_step(backend, step.id)
    assert closed is not None and closed.status == "failed" and closed.output is None


async def test_complete_step_attempt_fails_for_an_unknown_attempt(backend) -> None:
    run = await create_claimed_run(backend)

    with pytest.raises(WriteConflictError, match="Failed to mark step attempt completed"):
        await _complete_step(backend, run, new_id(), {"foo": "bar"})


# -- failStepAttempt -------------------------------------------------------------------


async def test_fail_step_attempt_marks_it_failed_idempotently(backend) -> None:
    run = await create_claimed_run(backend)
    created = await create_step(backend, run)
    error = {"message": "nope"}

    failed = await _fail_step(backend, run, created.id, error)

    assert failed.status == "failed"
    assert failed.error == error
    assert failed.output is None
    assert failed.finished_at is not None
    assert seconds_from_now(failed.finished_at) < 1

    again = await _fail_step(backend, run, created.id, error)
    assert again == failed

    fetched = await _get_step(backend, created.id)
    assert fetched == failed


async def test_fail_step_attempt_repeat_keeps_the_first_error(backend) -> None:
    run = await create_claimed_run(backend)
    created = await create_step(backend, run)
    first = await _fail_step(backend, run, created.id, {"message": "first"})

    again = await _fail_step(backend, run, created.id, {"message": "second"})

    assert again == first
    assert again.error == {"message": "first"}


async def test_fail_step_attempt_fails_once_the_run_is_not_running(backend) -> None:
    run = await create_claimed_run(backend)
    step = await create_step(backend, run)
    assert run.worker_id is not None
    await backend.complete_workflow_run(
        CompleteWorkflowRunParams(workflow_run_id=run.id, worker_id=run.worker_id, output=None)
    )

    with pytest.raises(WriteConflictError, match="Failed to mark step attempt failed"):
        await _fail_step(backend, run, step.id, {"message": "nope"})

    # As the completion closed it (a finished run keeps no attempt running).
    closed = await _get_step(backend, step.id)
    assert closed is not None and closed.status == "failed" and closed.error != {"message": "nope"}


async def test_fail_step_attempt_fails_for_an_unknown_attempt(backend) -> None:
    run = await create_claimed_run(backend)

    with pytest.raises(WriteConflictError, match="Failed to mark step attempt failed"):
        await _fail_step(backend, run, new_id(), {"message": "nope"})


# -- fencing after a lease transfer ----------------------------------------------------


async def test_stale_worker_cannot_touch_steps_after_the_lease_moved(backend) -> None:
    stale = await create_claimed_run(backend, lease_ms=60)
    step = await create_step(backend, stale, kind="workflow")
    child = await _child_of(backend, step)
    await sleep_until_after(stale.available_at)
    new_owner = await claim(backend, lease_ms=60_000)
    assert new_owner is not None
    assert new_owner.id == stale.id
    assert new_owner.worker_id != stale.worker_id

    with pytest.raises(WriteConflictError, match="Failed to set step attempt child workflow run"):
        await _link_child(backend, stale, step, child)
    with pytest.raises(WriteConflictError, match="Failed to mark step attempt completed"):
        await _complete_step(backend, stale, step.id, {"late": True})
    with pytest.raises(WriteConflictError, match="Failed to mark step attempt failed"):
        await _fail_step(backend, stale, step.id, {"message": "late"})
    with pytest.raises(WriteConflictError, match="Failed to create step attempt"):
        await create_step(backend, stale)

    untouched = await _get_step(backend, step.id)
    assert untouched == step
    assert untouched.status == "running"
    assert untouched.output is None
    assert untouched.error is None
    assert untouched.child_workflow_run_id is None
    assert [s.id for s in await list_steps(backend, stale.id)] == [step.id]

    # The new owner can carry on with the same attempt.
    linked = await _link_child(backend, new_owner, step, child)
    assert linked.child_workflow_run_id == child.id
    done = await _complete_step(backend, new_owner, step.id, {"ok": True})
    assert done.status == "completed"


async def test_expired_lease_still_lets_the_owner_write_until_reclaimed(backend) -> None:
    run = await create_claimed_run(backend, lease_ms=30)
    await sleep_until_after(run.available_at)

    # Nobody reclaimed the run, so the owner is still the owner.
    step = await create_step(backend, run)
    completed = await _complete_step(backend, run, step.id, 1)
    assert completed.status == "completed"
    assert seconds_from_now(completed.updated_at) < 1
