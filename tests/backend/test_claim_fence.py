"""The claim fence: a write carrying an older claim never lands, even for the same worker id.

A pass loses its lease (it was cut off from the database), the lease
expires, and the same worker id claims the run again. The worker id alone
cannot tell the two passes apart; the run's ``attempts``, bumped by every
claim, can. Each fenced write given the old pass's ``claim_attempt`` is
refused; given the new pass's it lands; given none it is fenced on the worker
id alone, as TypeScript workers' writes are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from openworkflow.core.backend import (
    CompleteStepAttemptParams,
    CompleteWorkflowRunParams,
    CreateCompletedStepAttemptParams,
    CreateStepAttemptParams,
    FailStepAttemptParams,
    FailWorkflowRunParams,
    RescheduleWorkflowRunAfterFailedStepAttemptParams,
    SetStepAttemptChildWorkflowRunParams,
    SleepWorkflowRunParams,
)
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import WriteConflictError
from tests.backend.helpers import (
    RESCHEDULING_RETRY_POLICY,
    claim,
    create_claimed_run,
    create_pending_run,
    create_step,
    get_run,
    list_steps,
    new_id,
    now,
    sleep_until_after,
)

Write = Callable[[Any, WorkflowRun, int | None], Awaitable[Any]]


async def _reclaimed_by_same_worker(backend: Any) -> tuple[WorkflowRun, WorkflowRun]:
    """A run claimed, its lease left to expire, and claimed again by the same worker id."""
    worker_id = new_id()
    first = await create_claimed_run(backend, worker_id=worker_id)
    await sleep_until_after(first.available_at)
    second = await claim(backend, worker_id=worker_id)
    assert second is not None and second.id == first.id
    assert second.worker_id == first.worker_id
    assert second.attempts == first.attempts + 1
    return first, second


async def _create_running(backend: Any, run: WorkflowRun, claim_attempt: int | None) -> Any:
    return await backend.create_step_attempt(
        CreateStepAttemptParams(
            workflow_run_id=run.id,
            worker_id=run.worker_id or "",
            step_name="s",
            kind="function",
            claim_attempt=claim_attempt,
        )
    )


async def _create_completed(backend: Any, run: WorkflowRun, claim_attempt: int | None) -> Any:
    return await backend.create_completed_step_attempt(
        CreateCompletedStepAttemptParams(
            workflow_run_id=run.id,
            worker_id=run.worker_id or "",
            step_name="s",
            kind="function",
            output=1,
            claim_attempt=claim_attempt,
        )
    )


async def _complete_run(backend: Any, run: WorkflowRun, claim_attempt: int | None) -> Any:
    return await backend.complete_workflow_run(
        CompleteWorkflowRunParams(
            workflow_run_id=run.id,
            worker_id=run.worker_id or "",
            output="done",
            claim_attempt=claim_attempt,
        )
    )


async def _fail_run(backend: Any, run: WorkflowRun, claim_attempt: int | None) -> Any:
    return await backend.fail_workflow_run(
        FailWorkflowRunParams(
            workflow_run_id=run.id,
            worker_id=run.worker_id or "",
            error={"message": "boom"},
            retry_policy=RESCHEDULING_RETRY_POLICY,
            claim_attempt=claim_attempt,
        )
    )


async def _reschedule_run(backend: Any, run: WorkflowRun, claim_attempt: int | None) -> Any:
    return await backend.reschedule_workflow_run_after_failed_step_attempt(
        RescheduleWorkflowRunAfterFailedStepAttemptParams(
            workflow_run_id=run.id,
            worker_id=run.worker_id or "",
            error={"message": "step failed"},
            available_at=now(),
            claim_attempt=claim_attempt,
        )
    )


async def _park_run(backend: Any, run: WorkflowRun, claim_attempt: int | None) -> Any:
    return await backend.sleep_workflow_run(
        SleepWorkflowRunParams(
            workflow_run_id=run.id,
            worker_id=run.worker_id or "",
            available_at=now() + timedelta(hours=1),
            claim_attempt=claim_attempt,
        )
    )


RUN_WRITES: dict[str, Write] = {
    "create_step_attempt": _create_running,
    "create_completed_step_attempt": _create_completed,
    "complete_workflow_run": _complete_run,
    "fail_workflow_run": _fail_run,
    "reschedule_workflow_run_after_failed_step_attempt": _reschedule_run,
    "sleep_workflow_run": _park_run,
}


@pytest.mark.parametrize("write", list(RUN_WRITES))
async def test_a_write_of_the_lost_claim_is_refused_after_the_same_worker_reclaims(
    backend: Any, write: str
) -> None:
    """The old pass's claim is refused; the new pass's claim and no claim both land."""
    first, second = await _reclaimed_by_same_worker(backend)
    with pytest.raises(WriteConflictError):
        await RUN_WRITES[write](backend, second, first.attempts)
    stored = await get_run(backend, second.id)
    assert (stored.status, stored.worker_id) == ("running", second.worker_id)  # not parked
    assert await list_steps(backend, second.id) == []
    await RUN_WRITES[write](backend, second, second.attempts)


@pytest.mark.parametrize("write", list(RUN_WRITES))
async def test_a_write_without_a_claim_is_fenced_on_the_worker_id_alone(
    backend: Any, write: str
) -> None:
    """TypeScript workers send no claim: their writes keep the worker-id fence they had."""
    _, second = await _reclaimed_by_same_worker(backend)
    await RUN_WRITES[write](backend, second, None)
    other = await create_pending_run(backend)
    with pytest.raises(WriteConflictError):
        await RUN_WRITES[write](backend, other, None)  # pending: nobody holds it


async def test_step_attempt_updates_of_the_lost_claim_are_refused(backend: Any) -> None:
    """Completing, failing or linking an attempt the old pass created: refused, then allowed."""
    worker_id = new_id()
    first = await create_claimed_run(backend, worker_id=worker_id)
    attempts = [await create_step(backend, first, step_name=f"s{n}") for n in range(3)]
    await sleep_until_after(first.available_at)
    second = await claim(backend, worker_id=worker_id)
    assert second is not None and second.id == first.id
    child = await create_pending_run(backend)

    def updates(claim_attempt: int) -> list[Awaitable[Any]]:
        common = {"workflow_run_id": first.id, "worker_id": worker_id}
        return [
            backend.complete_step_attempt(
                CompleteStepAttemptParams(
                    **common, step_attempt_id=attempts[0].id, output=1, claim_attempt=claim_attempt
                )
            ),
            backend.fail_step_attempt(
                FailStepAttemptParams(
                    **common,
                    step_attempt_id=attempts[1].id,
                    error={"message": "x"},
                    claim_attempt=claim_attempt,
                )
            ),
            backend.set_step_attempt_child_workflow_run(
                SetStepAttemptChildWorkflowRunParams(
                    **common,
                    step_attempt_id=attempts[2].id,
                    child_workflow_run_namespace_id=child.namespace_id,
                    child_workflow_run_id=child.id,
                    claim_attempt=claim_attempt,
                )
            ),
        ]

    for update in updates(first.attempts):
        with pytest.raises(WriteConflictError):
            await update
    stored = {step.id: step for step in await list_steps(backend, first.id)}
    assert [stored[a.id].status for a in attempts] == ["running"] * 3
    assert stored[attempts[2].id].child_workflow_run_id is None
    for update in updates(second.attempts):
        await update
    stored = {step.id: step for step in await list_steps(backend, first.id)}
    assert [stored[a.id].status for a in attempts] == ["completed", "failed", "running"]
    assert stored[attempts[2].id].child_workflow_run_id == child.id


async def test_a_batch_mixes_held_and_lost_claims(backend: Any) -> None:
    """Group-committed writes: each item is fenced on its own claim."""
    first, second = await _reclaimed_by_same_worker(backend)
    other = await create_claimed_run(backend)
    # Steps first, then completions: a run completed first would refuse its step.
    results = await asyncio.gather(
        _create_completed(backend, second, first.attempts),
        _create_completed(backend, other, other.attempts),
        return_exceptions=True,
    )
    results += await asyncio.gather(
        _complete_run(backend, second, first.attempts),
        _complete_run(backend, other, other.attempts),
        return_exceptions=True,
    )
    assert isinstance(results[0], WriteConflictError)
    assert not isinstance(results[1], BaseException)
    assert isinstance(results[2], WriteConflictError)
    assert not isinstance(results[3], BaseException)
    assert (await get_run(backend, second.id)).status == "running"
    assert (await get_run(backend, other.id)).status == "completed"
