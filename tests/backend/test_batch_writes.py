"""Claiming several runs in one call, and recording a quick step with one write."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from openworkflow.core.backend import (
    CancelWorkflowRunParams,
    ClaimWorkflowRunsParams,
    CreateCompletedStepAttemptParams,
    RetryWorkflowRunParams,
    SleepWorkflowRunParams,
)
from openworkflow.errors import WriteConflictError
from tests.backend.helpers import (
    LEASE_MS,
    create_claimed_run,
    create_pending_run,
    create_step,
    get_run,
    in_one_year,
    list_steps,
    new_id,
    now,
    park,
    sleep_until_after,
)


async def _claim_many(backend, worker_ids: list[str], lease_ms: int = 60_000):
    return await backend.claim_workflow_runs(
        ClaimWorkflowRunsParams(worker_ids=worker_ids, lease_duration_ms=lease_ms)
    )


async def test_batch_claim_leases_one_run_per_worker_id_in_claim_order(backend) -> None:
    oldest = await create_pending_run(backend, available_at=now() - timedelta(seconds=3))
    middle = await create_pending_run(backend, available_at=now() - timedelta(seconds=2))
    newest = await create_pending_run(backend, available_at=now() - timedelta(seconds=1))

    claimed = await _claim_many(backend, ["w-1", "w-2"])

    assert [run.id for run in claimed] == [oldest.id, middle.id]
    assert [run.worker_id for run in claimed] == ["w-1", "w-2"]
    assert all(run.status == "running" and run.attempts == 1 for run in claimed)
    rest = await _claim_many(backend, ["w-3", "w-4", "w-5"])
    assert [(run.id, run.worker_id) for run in rest] == [(newest.id, "w-3")]
    assert await _claim_many(backend, ["w-6"]) == []
    assert await _claim_many(backend, []) == []


async def test_batch_claim_takes_pending_runs_before_expired_leases(backend) -> None:
    expired = await create_claimed_run(backend, worker_id="gone", lease_ms=LEASE_MS)
    await sleep_until_after(expired.available_at)
    pending = await create_pending_run(backend)
    future = await create_pending_run(backend, available_at=in_one_year())

    claimed = await _claim_many(backend, ["a", "b", "c"])

    assert [run.id for run in claimed] == [pending.id, expired.id]
    assert claimed[1].attempts == 2 and claimed[1].worker_id == "b"
    assert future.id not in {run.id for run in claimed}


async def test_batch_claim_skips_parked_runs_until_due_and_expires_deadlines(backend) -> None:
    parked = await create_claimed_run(backend)
    await park(backend, parked, in_one_year())
    past_deadline = await create_pending_run(backend, deadline_at=now() - timedelta(milliseconds=1))

    assert await _claim_many(backend, ["a", "b"]) == []
    assert (await get_run(backend, past_deadline.id)).status == "failed"


async def test_concurrent_batch_claims_never_share_a_run(backend) -> None:
    runs = [await create_pending_run(backend) for _ in range(12)]

    batches = await asyncio.gather(
        *(_claim_many(backend, [f"{side}-{i}" for i in range(5)]) for side in "abc")
    )

    claimed = [run.id for batch in batches for run in batch]
    assert sorted(claimed) == sorted(run.id for run in runs)
    assert len(set(claimed)) == len(claimed)


async def test_create_completed_step_attempt_records_the_output_in_one_row(backend) -> None:
    run = await create_claimed_run(backend)
    assert run.worker_id is not None

    attempt = await backend.create_completed_step_attempt(
        CreateCompletedStepAttemptParams(
            workflow_run_id=run.id,
            worker_id=run.worker_id,
            step_name="quick",
            kind="function",
            output={"total": 3, "names": ["a", "é"]},
        )
    )

    assert attempt.status == "completed"
    assert attempt.output == {"total": 3, "names": ["a", "é"]}
    assert attempt.kind == "function" and attempt.config == {} and attempt.context is None
    assert attempt.started_at is not None and attempt.finished_at is not None
    assert attempt.finished_at >= attempt.started_at
    assert await list_steps(backend, run.id) == [attempt]


async def test_create_completed_step_attempt_stores_a_null_output(backend) -> None:
    run = await create_claimed_run(backend)
    assert run.worker_id is not None
    attempt = await backend.create_completed_step_attempt(
        CreateCompletedStepAttemptParams(
            workflow_run_id=run.id,
            worker_id=run.worker_id,
            step_name="nothing",
            kind="function",
            output=None,
        )
    )
    assert attempt.status == "completed" and attempt.output is None


async def test_create_completed_step_attempt_is_fenced(backend) -> None:
    run = await create_claimed_run(backend)
    params = CreateCompletedStepAttemptParams(
        workflow_run_id=run.id,
        worker_id=new_id(),
        step_name="quick",
        kind="function",
        output=1,
    )
    with pytest.raises(WriteConflictError, match="Failed to create completed step attempt"):
        await backend.create_completed_step_attempt(params)

    await park(backend, run, in_one_year())
    assert run.worker_id is not None
    with pytest.raises(WriteConflictError):
        await backend.create_completed_step_attempt(
            CreateCompletedStepAttemptParams(
                workflow_run_id=run.id,
                worker_id=run.worker_id,
                step_name="quick",
                kind="function",
                output=1,
            )
        )
    assert await list_steps(backend, run.id) == []


async def test_concurrent_step_writes_of_many_runs_each_keep_their_own_fence(backend) -> None:
    """Many executions write at once (PostgreSQL group-commits them): each
    owned write lands with its own output, a write by the wrong worker fails
    alone, and nothing else is written."""
    runs = [await create_claimed_run(backend) for _ in range(6)]

    async def write(run_index: int, step_index: int, worker_id: str | None) -> object:
        run = runs[run_index]
        assert run.worker_id is not None
        return await backend.create_completed_step_attempt(
            CreateCompletedStepAttemptParams(
                workflow_run_id=run.id,
                worker_id=worker_id or run.worker_id,
                step_name=f"step-{step_index}",
                kind="function",
                output={"run": run_index, "step": step_index},
            )
        )

    outcomes = await asyncio.gather(
        *(write(r, s, None) for r in range(6) for s in range(5)),
        write(2, 99, "intruder"),
        return_exceptions=True,
    )

    *owned, intruder = outcomes
    assert isinstance(intruder, WriteConflictError)
    assert all(not isinstance(outcome, BaseException) for outcome in owned)
    for run_index, run in enumerate(runs):
        steps = await list_steps(backend, run.id)
        assert sorted(step.step_name for step in steps) == [f"step-{s}" for s in range(5)]
        assert all(
            step.output == {"run": run_index, "step": int(step.step_name[5:])} for step in steps
        )
        assert all(step.status == "completed" for step in steps)


async def test_a_claim_says_whether_a_fresh_run_has_step_history(backend) -> None:
    """A run claimed from pending says if it has step attempts (a fresh one
    skips reading its history); after a retry its old attempts count."""
    fresh = await create_pending_run(backend)
    [claimed] = await _claim_many(backend, ["w-1"])
    assert claimed.id == fresh.id and claimed.has_step_attempts is False

    assert claimed.worker_id is not None
    await backend.create_completed_step_attempt(
        CreateCompletedStepAttemptParams(
            workflow_run_id=claimed.id,
            worker_id=claimed.worker_id,
            step_name="done-once",
            kind="function",
            output=1,
        )
    )
    await backend.cancel_workflow_run(CancelWorkflowRunParams(workflow_run_id=fresh.id))
    await backend.retry_workflow_run(RetryWorkflowRunParams(workflow_run_id=fresh.id))
    [retried] = await _claim_many(backend, ["w-2"])
    assert retried.id == fresh.id and retried.has_step_attempts is True


async def test_a_reclaimed_run_never_claims_to_have_no_history(backend) -> None:
    run = await create_claimed_run(backend, worker_id="gone", lease_ms=LEASE_MS)
    await create_step(backend, run, step_name="before-the-crash")
    await sleep_until_after(run.available_at)
    [reclaimed] = await _claim_many(backend, ["w-2"])
    assert reclaimed.id == run.id
    # True where the backend can know it, else None ("read it"); never False.
    assert reclaimed.has_step_attempts is not False
    assert reclaimed.lease_expired is True


async def test_a_claim_says_whether_the_run_was_taken_from_an_expired_lease(backend) -> None:
    fresh = await create_pending_run(backend)
    [claimed] = await _claim_many(backend, ["w-1"])
    assert claimed.id == fresh.id and claimed.lease_expired is False

    # A parked run (handed back, no owner) is not a crash recovery.
    await park(backend, claimed, now() - timedelta(milliseconds=1))
    [resumed] = await _claim_many(backend, ["w-2"])
    assert resumed.id == fresh.id and resumed.lease_expired is False


async def test_a_hand_back_deletes_only_the_abandoned_running_function_attempts(backend) -> None:
    run = await create_claimed_run(backend)
    assert run.worker_id is not None
    abandoned = await create_step(backend, run, step_name="abandoned")
    kept = await create_step(backend, run, step_name="kept")
    wait = await create_step(backend, run, step_name="a-sleep", kind="sleep")
    done = await backend.create_completed_step_attempt(
        CreateCompletedStepAttemptParams(
            workflow_run_id=run.id,
            worker_id=run.worker_id,
            step_name="done",
            kind="function",
            output=1,
        )
    )

    # A stranger cannot delete anything (the fence), and the park is refused.
    with pytest.raises(WriteConflictError):
        await backend.sleep_workflow_run(
            SleepWorkflowRunParams(
                workflow_run_id=run.id,
                worker_id="stranger",
                available_at=now(),
                abandoned_step_attempt_ids=(abandoned.id,),
            )
        )
    assert len(await list_steps(backend, run.id)) == 4

    parked = await backend.sleep_workflow_run(
        SleepWorkflowRunParams(
            workflow_run_id=run.id,
            worker_id=run.worker_id,
            available_at=now(),
            abandoned_step_attempt_ids=(abandoned.id, wait.id, done.id),
        )
    )

    assert parked.worker_id is None
    assert sorted(s.step_name for s in await list_steps(backend, run.id)) == [
        "a-sleep",
        "done",
        "kept",
    ]
    assert kept.status == "running"
