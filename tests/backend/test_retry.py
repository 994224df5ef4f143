"""``retry_workflow_run`` (beyond the original): failed or canceled runs go back to pending."""

from __future__ import annotations

from typing import Any

import pytest

from openworkflow.core.backend import (
    CancelWorkflowRunParams,
    CompleteStepAttemptParams,
    CompleteWorkflowRunParams,
    FailStepAttemptParams,
    ListStepAttemptsParams,
    RetryWorkflowRunParams,
)
from openworkflow.errors import InvalidRunStateError, WorkflowRunNotFoundError
from tests.backend.helpers import (
    TERMINAL_RETRY_POLICY,
    claim,
    create_claimed_run,
    create_pending_run,
    create_step,
    get_run,
    new_id,
)


async def _fail_for_good(backend: Any, run: Any) -> Any:
    from openworkflow.core.backend import FailWorkflowRunParams

    return await backend.fail_workflow_run(
        FailWorkflowRunParams(
            workflow_run_id=run.id,
            worker_id=run.worker_id,
            error={"message": "boom"},
            retry_policy=TERMINAL_RETRY_POLICY,
        )
    )


async def test_a_failed_run_goes_back_to_pending_keeping_completed_steps(backend: Any) -> None:
    run = await create_claimed_run(backend)
    done = await create_step(backend, run, step_name="done")
    await backend.complete_step_attempt(
        CompleteStepAttemptParams(
            workflow_run_id=run.id, step_attempt_id=done.id, worker_id=run.worker_id, output=1
        )
    )
    broken = await create_step(backend, run, step_name="broken")
    await backend.fail_step_attempt(
        FailStepAttemptParams(
            workflow_run_id=run.id,
            step_attempt_id=broken.id,
            worker_id=run.worker_id,
            error={"message": "x"},
        )
    )
    await create_step(backend, run, step_name="orphan")  # a function attempt left running
    waiting = await create_step(backend, run, step_name="nap", kind="sleep", context={})
    failed = await _fail_for_good(backend, run)
    assert failed.status == "failed"

    retried = await backend.retry_workflow_run(RetryWorkflowRunParams(workflow_run_id=run.id))
    assert retried.id == run.id
    assert retried.status == "pending"
    assert retried.attempts == 0
    assert retried.error is None and retried.output is None
    assert retried.worker_id is None and retried.finished_at is None
    assert retried.started_at is None and retried.available_at is not None
    steps = await backend.list_step_attempts(ListStepAttemptsParams(workflow_run_id=run.id))
    # The failure closed the sleep, so the retry runs it again like a failed step.
    assert {s.step_name: s.status for s in steps.data} == {"done": "completed"}
    assert waiting.id not in {s.id for s in steps.data}
    claimed = await claim(backend)
    assert claimed is not None and claimed.id == run.id and claimed.attempts == 1


async def test_a_canceled_run_can_be_retried(backend: Any) -> None:
    run = await create_pending_run(backend)
    await backend.cancel_workflow_run(CancelWorkflowRunParams(workflow_run_id=run.id))
    retried = await backend.retry_workflow_run(RetryWorkflowRunParams(workflow_run_id=run.id))
    assert retried.status == "pending"
    assert (await get_run(backend, run.id)).status == "pending"


@pytest.mark.parametrize("state", ["pending", "running", "completed"])
async def test_only_failed_or_canceled_runs_can_be_retried(backend: Any, state: str) -> None:
    if state == "pending":
        run = await create_pending_run(backend)
    else:
        run = await create_claimed_run(backend)
        if state == "completed":
            run = await backend.complete_workflow_run(
                CompleteWorkflowRunParams(
                    workflow_run_id=run.id, worker_id=run.worker_id, output=None
                )
            )
    with pytest.raises(InvalidRunStateError, match=f"Cannot retry workflow run .* {state}"):
        await backend.retry_workflow_run(RetryWorkflowRunParams(workflow_run_id=run.id))
    assert (await get_run(backend, run.id)).status == state


async def test_retrying_a_missing_run_raises(backend: Any) -> None:
    with pytest.raises(WorkflowRunNotFoundError):
        await backend.retry_workflow_run(RetryWorkflowRunParams(workflow_run_id=new_id()))


async def test_retry_is_namespace_scoped(backend: Any, make_backend: Any) -> None:
    run = await create_pending_run(backend)
    await backend.cancel_workflow_run(CancelWorkflowRunParams(workflow_run_id=run.id))
    other = make_backend(new_id())
    with pytest.raises(WorkflowRunNotFoundError):
        await other.retry_workflow_run(RetryWorkflowRunParams(workflow_run_id=run.id))
