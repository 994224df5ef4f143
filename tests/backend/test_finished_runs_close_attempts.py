"""No step attempt of a finished run stays ``running`` (SPEC 13; issue 14, item 7).

Every terminal transition (cancel, completion, failure for good, deadline
expiry found by the claim sweep) fails the run's running attempts, waits and
sleeps included, in its own transaction, with an error saying why.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from openworkflow.core.backend import (
    CancelWorkflowRunParams,
    CompleteWorkflowRunParams,
    FailWorkflowRunParams,
)
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_run import WorkflowRun
from tests.backend.helpers import (
    TERMINAL_RETRY_POLICY,
    claim,
    create_claimed_run,
    create_linked_child,
    create_pending_run,
    create_signal_wait,
    create_step,
    get_run,
    in_one_year,
    list_steps,
    now,
    park,
    seconds_from_now,
)
from tests.fixtures.clock import Clock


async def _open_attempt(backend: Any, run: WorkflowRun, kind: str) -> StepAttempt:
    if kind == "sleep":
        return await create_step(backend, run, step_name="nap", kind="sleep", context={})
    if kind == "signal-wait":
        return await create_signal_wait(backend, run, "approval")
    if kind == "workflow":
        return (await create_linked_child(backend, run))[0]
    return await create_step(backend, run, step_name="work")


async def _assert_closed(backend: Any, run_id: str, message: str) -> None:
    """Every attempt of the run failed with ``message``, when the run finished."""
    finished_at = (await get_run(backend, run_id)).finished_at
    assert finished_at is not None and seconds_from_now(finished_at) < 5
    steps = await list_steps(backend, run_id)
    assert steps, "the run should have step attempts"
    for step in steps:
        assert step.status == "failed", step
        assert step.error == {"message": message}
        assert step.finished_at == finished_at


async def _no_running_attempts(backend: Any) -> None:
    assert (await backend.count_step_attempts()).running == 0


@pytest.mark.parametrize("kind", ["sleep", "signal-wait", "workflow"])
async def test_cancel_of_a_parked_run_closes_its_wait(backend: Any, kind: str) -> None:
    run = await create_claimed_run(backend)
    await _open_attempt(backend, run, kind)
    await park(backend, run, in_one_year())

    await backend.cancel_workflow_run(CancelWorkflowRunParams(workflow_run_id=run.id))

    await _assert_closed(backend, run.id, "the run was canceled")
    await _no_running_attempts(backend)


async def test_cancel_of_an_executing_run_closes_its_running_step(backend: Any) -> None:
    run = await create_claimed_run(backend)
    await _open_attempt(backend, run, "function")
    await backend.cancel_workflow_run(CancelWorkflowRunParams(workflow_run_id=run.id))
    await _assert_closed(backend, run.id, "the run was canceled")
    await _no_running_attempts(backend)


async def test_failure_for_good_closes_open_attempts(backend: Any) -> None:
    run = await create_claimed_run(backend)
    await _open_attempt(backend, run, "function")
    await _open_attempt(backend, run, "sleep")
    assert run.worker_id is not None
    failed = await backend.fail_workflow_run(
        FailWorkflowRunParams(
            workflow_run_id=run.id,
            worker_id=run.worker_id,
            error={"message": "boom"},
            retry_policy=TERMINAL_RETRY_POLICY,
        )
    )
    assert failed.status == "failed"
    await _assert_closed(backend, run.id, "the run failed before this step attempt finished")
    await _no_running_attempts(backend)


async def test_completion_closes_open_attempts(backend: Any) -> None:
    run = await create_claimed_run(backend)
    await _open_attempt(backend, run, "function")  # e.g. abandoned by a crashed pass
    assert run.worker_id is not None
    completed = await backend.complete_workflow_run(
        CompleteWorkflowRunParams(workflow_run_id=run.id, worker_id=run.worker_id, output=1)
    )
    assert completed.status == "completed"
    await _assert_closed(backend, run.id, "the run completed before this step attempt finished")
    await _no_running_attempts(backend)


async def test_deadline_expiry_closes_the_parked_runs_wait(backend: Any, clock: Clock) -> None:
    run = await create_pending_run(backend, deadline_at=now() + timedelta(minutes=1))
    claimed = await claim(backend)
    assert claimed is not None and claimed.id == run.id
    await _open_attempt(backend, claimed, "signal-wait")
    await park(backend, claimed, in_one_year())

    clock.advance(timedelta(minutes=2))
    assert await claim(backend) is None  # the sweep fails the run past its deadline

    assert (await get_run(backend, run.id)).status == "failed"
    await _assert_closed(backend, run.id, "Workflow run deadline exceeded")
    await _no_running_attempts(backend)
