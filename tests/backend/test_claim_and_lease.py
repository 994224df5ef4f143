"""Claiming, leases, parking, completing, failing, rescheduling and deadlines."""

from __future__ import annotations

from datetime import timedelta

import pytest

from openworkflow.core.backend import (
    CancelWorkflowRunParams,
    CompleteWorkflowRunParams,
    ExtendWorkflowRunLeaseParams,
    FailStepAttemptParams,
    FailWorkflowRunParams,
    RescheduleWorkflowRunAfterFailedStepAttemptParams,
    SendSignalParams,
    SleepWorkflowRunParams,
)
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import WriteConflictError
from tests.backend.helpers import (
    RESCHEDULING_RETRY_POLICY,
    TERMINAL_RETRY_POLICY,
    claim,
    create_claimed_run,
    create_linked_child,
    create_pending_run,
    create_signal_wait,
    get_run,
    in_one_year,
    ms_between,
    new_id,
    now,
    park,
    seconds_from_now,
    sleep_until_after,
)

DEADLINE_EXCEEDED = {"message": "Workflow run deadline exceeded"}


async def _complete(backend, run: WorkflowRun, output: object = None) -> WorkflowRun:
    assert run.worker_id is not None
    return await backend.complete_workflow_run(
        CompleteWorkflowRunParams(workflow_run_id=run.id, worker_id=run.worker_id, output=output)
    )


async def _fail(
    backend, run: WorkflowRun, policy=RESCHEDULING_RETRY_POLICY, **extra: object
) -> WorkflowRun:
    assert run.worker_id is not None
    return await backend.fail_workflow_run(
        FailWorkflowRunParams(
            workflow_run_id=run.id,
            worker_id=run.worker_id,
            error=extra.pop("error", {"message": "boom"}),
            retry_policy=policy,
            **extra,
        )
    )


# -- claimWorkflowRun ----------------------------------------------------------


async def test_claim_sets_owner_and_respects_the_lease_until_it_expires(backend) -> None:
    created = await create_pending_run(backend)
    first_worker = new_id()

    before = now()
    claimed = await claim(backend, first_worker, lease_ms=100)

    assert claimed is not None
    assert claimed.id == created.id
    assert claimed.status == "running"
    assert claimed.worker_id == first_worker
    assert claimed.attempts == 1
    assert claimed.started_at is not None
    assert seconds_from_now(claimed.started_at) < 1
    assert claimed.available_at is not None
    assert 90 <= ms_between(claimed.available_at, before) < 1000  # now + lease

    second_worker = new_id()
    assert await claim(backend, second_worker, lease_ms=100) is None

    await sleep_until_after(claimed.available_at)
    reclaimed = await claim(backend, second_worker, lease_ms=100)

    assert reclaimed is not None
    assert reclaimed.id == created.id
    assert reclaimed.status == "running"
    assert reclaimed.attempts == 2
    assert reclaimed.worker_id == second_worker
    assert reclaimed.started_at == claimed.started_at


async def test_claim_prefers_pending_runs_over_expired_running_runs(backend) -> None:
    running = await create_claimed_run(backend, worker_id="worker-running", lease_ms=50)
    await sleep_until_after(running.available_at)

    pending = await create_pending_run(backend)
    claimed_first = await claim(backend, "worker-second")
    assert claimed_first is not None
    assert claimed_first.id == pending.id

    claimed_second = await claim(backend, "worker-third")
    assert claimed_second is not None
    assert claimed_second.id == running.id
    assert claimed_second.worker_id == "worker-third"
    assert claimed_second.attempts == 2


async def test_claim_returns_none_when_nothing_is_available(backend) -> None:
    assert await claim(backend) is None


async def test_claim_skips_runs_scheduled_in_the_future(backend) -> None:
    scheduled = await create_pending_run(backend, available_at=now() + timedelta(milliseconds=150))

    assert await claim(backend) is None

    await sleep_until_after(scheduled.available_at)
    claimed = await claim(backend)
    assert claimed is not None
    assert claimed.id == scheduled.id


async def test_claim_takes_pending_runs_in_available_at_order(backend) -> None:
    later = await create_pending_run(backend, available_at=now() - timedelta(seconds=1))
    earlier = await create_pending_run(backend, available_at=now() - timedelta(seconds=2))

    first = await claim(backend)
    second = await claim(backend)

    assert first is not None
    assert second is not None
    assert [first.id, second.id] == [earlier.id, later.id]


async def test_claim_only_sees_its_own_namespace(backend, make_backend) -> None:
    other = make_backend(new_id())
    foreign = await create_pending_run(other)

    assert await claim(backend) is None
    claimed = await claim(other)
    assert claimed is not None
    assert claimed.id == foreign.id


# -- extendWorkflowRunLease -----------------------------------------------------


async def test_extend_lease_moves_available_at_past_the_previous_expiry(backend) -> None:
    claimed = await create_claimed_run(backend, lease_ms=20)
    assert claimed.worker_id is not None
    assert claimed.available_at is not None

    before = now()
    extended = await backend.extend_workflow_run_lease(
        ExtendWorkflowRunLeaseParams(
            workflow_run_id=claimed.id, worker_id=claimed.worker_id, lease_duration_ms=200
        )
    )

    assert extended.available_at is not None
    assert extended.available_at > claimed.available_at
    assert 190 <= ms_between(extended.available_at, before) < 1000
    assert extended.status == "running"
    assert extended.worker_id == claimed.worker_id
    assert extended.attempts == claimed.attempts
    assert (await get_run(backend, claimed.id)).available_at == extended.available_at


async def test_extend_lease_is_refused_to_a_non_owner(backend) -> None:
    claimed = await create_claimed_run(backend, lease_ms=60_000)

    with pytest.raises(WriteConflictError, match="Failed to extend lease for workflow run"):
        await backend.extend_workflow_run_lease(
            ExtendWorkflowRunLeaseParams(
                workflow_run_id=claimed.id, worker_id=new_id(), lease_duration_ms=60_000
            )
        )

    assert (await get_run(backend, claimed.id)).available_at == claimed.available_at


# -- sleepWorkflowRun -------------------------------------------------------------


async def test_sleep_parks_the_run_until_the_exact_time(backend) -> None:
    claimed = await create_claimed_run(backend)
    sleep_until = now() + timedelta(seconds=5)

    parked = await park(backend, claimed, sleep_until)

    assert parked.status == "running"
    assert parked.worker_id is None
    assert parked.available_at == sleep_until
    assert parked.started_at == claimed.started_at
    assert parked.attempts == claimed.attempts
    fetched = await get_run(backend, claimed.id)
    assert fetched.available_at == sleep_until
    assert fetched.worker_id is None
    assert fetched.status == "running"


async def test_parked_run_is_claimable_once_its_time_has_come(backend) -> None:
    claimed = await create_claimed_run(backend)
    parked = await park(backend, claimed, now() + timedelta(milliseconds=120))

    assert await claim(backend) is None

    await sleep_until_after(parked.available_at)
    worker_id = new_id()
    resumed = await claim(backend, worker_id)
    assert resumed is not None
    assert resumed.id == claimed.id
    assert resumed.worker_id == worker_id
    assert resumed.attempts == 2
    assert resumed.started_at == claimed.started_at


async def test_sleep_fails_for_completed_failed_and_canceled_runs(backend) -> None:
    completed = await create_claimed_run(backend)
    await _complete(backend, completed)
    failed = await create_claimed_run(backend)
    await _fail(backend, failed, TERMINAL_RETRY_POLICY)
    canceled = await create_claimed_run(backend)
    await backend.cancel_workflow_run(CancelWorkflowRunParams(workflow_run_id=canceled.id))

    for run, status in ((completed, "completed"), (failed, "failed"), (canceled, "canceled")):
        with pytest.raises(WriteConflictError, match="Failed to sleep workflow run"):
            await park(backend, run, now() + timedelta(minutes=1))
        after = await get_run(backend, run.id)
        assert after.status == status
        assert after.available_at is None


async def test_sleep_is_refused_to_a_non_owner(backend) -> None:
    claimed = await create_claimed_run(backend, lease_ms=60_000)

    with pytest.raises(WriteConflictError, match="Failed to sleep workflow run"):
        await backend.sleep_workflow_run(
            SleepWorkflowRunParams(
                workflow_run_id=claimed.id, worker_id=new_id(), available_at=in_one_year()
            )
        )

    after = await get_run(backend, claimed.id)
    assert after.worker_id == claimed.worker_id
    assert after.available_at == claimed.available_at


async def test_sleep_overwrites_a_stale_past_available_at(backend) -> None:
    claimed = await create_claimed_run(backend, lease_ms=30)
    await sleep_until_after(claimed.available_at)  # the lease is now in the past
    resume_at = now() + timedelta(days=7)

    parked = await park(backend, claimed, resume_at)

    assert parked.available_at == resume_at
    assert parked.worker_id is None
    assert parked.status == "running"


async def test_sleep_wakes_at_once_when_the_child_already_finished(backend) -> None:
    parent = await create_claimed_run(backend, lease_ms=60_000)
    _, child = await create_linked_child(backend, parent)
    claimed_child = await claim(backend, lease_ms=60_000)
    assert claimed_child is not None
    assert claimed_child.id == child.id
    await _complete(backend, claimed_child, {"ok": True})

    parked = await park(backend, parent, now() + timedelta(days=7))

    assert parked.status == "running"
    assert parked.worker_id is None
    assert parked.available_at is not None
    assert ms_between(parked.available_at, now()) < 1000
    resumed = await claim(backend)
    assert resumed is not None
    assert resumed.id == parent.id


async def test_sleep_does_not_wake_when_the_workflow_step_already_failed(backend) -> None:
    parent = await create_claimed_run(backend, lease_ms=60_000)
    step, child = await create_linked_child(backend, parent)
    assert parent.worker_id is not None
    await backend.fail_step_attempt(
        FailStepAttemptParams(
            workflow_run_id=parent.id,
            step_attempt_id=step.id,
            worker_id=parent.worker_id,
            error={"message": "workflow failed in parent"},
        )
    )
    resume_at = now() + timedelta(days=7)

    parked = await park(backend, parent, resume_at)
    assert parked.status == "running"
    assert parked.worker_id is None
    assert parked.available_at == resume_at

    claimed_child = await claim(backend, lease_ms=60_000)
    assert claimed_child is not None
    assert claimed_child.id == child.id
    await _complete(backend, claimed_child, {"ok": True})

    after = await get_run(backend, parent.id)
    assert after.status == "running"
    assert after.worker_id is None
    assert after.available_at == resume_at

    assert await claim(backend) is None  # the parent keeps sleeping


# -- completeWorkflowRun --------------------------------------------------------


async def test_complete_marks_the_run_completed(backend) -> None:
    claimed = await create_claimed_run(backend, lease_ms=20)

    completed = await _complete(backend, claimed, {"ok": True})

    assert completed.status == "completed"
    assert completed.output == {"ok": True}
    assert completed.error is None
    assert completed.finished_at is not None
    assert seconds_from_now(completed.finished_at) < 1
    assert completed.available_at is None
    assert completed.worker_id == claimed.worker_id  # kept, as upstream
    assert completed.started_at == claimed.started_at
    assert await get_run(backend, claimed.id) == completed
    assert await claim(backend) is None


async def test_complete_is_refused_to_a_non_owner_and_after_completion(backend) -> None:
    claimed = await create_claimed_run(backend, lease_ms=60_000)

    with pytest.raises(WriteConflictError, match="Failed to mark workflow run completed"):
        await backend.complete_workflow_run(
            CompleteWorkflowRunParams(workflow_run_id=claimed.id, worker_id=new_id(), output=1)
        )
    assert (await get_run(backend, claimed.id)).status == "running"

    await _complete(backend, claimed, "first")
    with pytest.raises(WriteConflictError, match="Failed to mark workflow run completed"):
        await _complete(backend, claimed, "second")
    assert (await get_run(backend, claimed.id)).output == "first"


async def test_child_completion_wakes_a_parked_parent(backend) -> None:
    parent = await create_claimed_run(backend)
    _, child = await create_linked_child(backend, parent)
    far_future = now() + timedelta(minutes=5)
    await park(backend, parent, far_future)
    claimed_child = await claim(backend, lease_ms=20)
    assert claimed_child is not None
    assert claimed_child.id == child.id

    await _complete(backend, claimed_child, {"ok": True})

    parent_after = await get_run(backend, parent.id)
    assert parent_after.status == "running"
    assert parent_after.worker_id is None
    assert parent_after.available_at is not None
    assert parent_after.available_at < far_future
    assert parent_after.available_at <= now() + timedelta(seconds=5)


async def test_signal_delivered_before_parking_makes_the_park_available_now(backend) -> None:
    run = await create_claimed_run(backend)
    signal = f"reconcile-{new_id()}"
    await create_signal_wait(backend, run, signal)

    sent = await backend.send_signal(
        SendSignalParams(signal=signal, data={"value": "arrived-early"}, idempotency_key=None)
    )
    assert run.id in sent.workflow_run_ids

    far_future = now() + timedelta(minutes=5)
    parked = await park(backend, run, far_future)

    for after in (parked, await get_run(backend, run.id)):
        assert after.status == "running"
        assert after.worker_id is None
        assert after.available_at is not None
        assert after.available_at < far_future
        assert after.available_at <= now() + timedelta(seconds=5)


async def test_child_completion_does_not_disturb_an_owned_parent(backend) -> None:
    parent_worker = new_id()
    parent = await create_claimed_run(backend, worker_id=parent_worker, lease_ms=5 * 60 * 1000)
    assert parent.available_at is not None
    _, child = await create_linked_child(backend, parent)
    claimed_child = await claim(backend, lease_ms=20)
    assert claimed_child is not None
    assert claimed_child.id == child.id

    await _complete(backend, claimed_child, {"ok": True})

    parent_after = await get_run(backend, parent.id)
    assert parent_after.status == "running"
    assert parent_after.worker_id == parent_worker
    assert parent_after.available_at is not None
    assert parent_after.available_at >= parent.available_at - timedelta(seconds=1)
    assert parent_after.available_at > now() + timedelta(seconds=1)


# -- failWorkflowRun ------------------------------------------------------------


async def test_first_failure_reschedules_after_about_one_second(backend) -> None:
    claimed = await create_claimed_run(backend, lease_ms=20)
    before = now()

    failed = await _fail(backend, claimed, error={"message": "boom"})

    assert failed.status == "pending"
    assert failed.error == {"message": "boom"}
    assert failed.output is None
    assert failed.finished_at is None
    assert failed.worker_id is None
    assert failed.started_at is None  # cleared for the retry
    assert failed.attempts == 1
    assert failed.available_at is not None
    assert 900 <= ms_between(failed.available_at, before) < 1500
    assert await get_run(backend, claimed.id) == failed


async def test_second_failure_backs_off_about_two_seconds(backend) -> None:
    claimed = await create_claimed_run(backend, lease_ms=20)
    assert claimed.attempts == 1
    first = await _fail(backend, claimed, error={"message": "first failure"})
    assert first.status == "pending"

    assert await claim(backend) is None  # still backing off
    await sleep_until_after(first.available_at)
    reclaimed = await claim(backend, lease_ms=20)
    assert reclaimed is not None
    assert reclaimed.id == claimed.id
    assert reclaimed.attempts == 2

    before = now()
    second = await _fail(backend, reclaimed, error={"message": "second failure"})

    assert second.status == "pending"
    assert second.attempts == 2
    assert second.error == {"message": "second failure"}
    assert second.available_at is not None
    assert 1900 <= ms_between(second.available_at, before) < 2500


async def test_failure_with_exhausted_attempts_fails_for_good(backend) -> None:
    claimed = await create_claimed_run(backend)

    failed = await _fail(backend, claimed, TERMINAL_RETRY_POLICY, error={"message": "fatal"})

    assert failed.status == "failed"
    assert failed.error == {"message": "fatal"}
    assert failed.available_at is None
    assert failed.finished_at is not None
    assert seconds_from_now(failed.finished_at) < 1
    assert failed.worker_id is None
    assert failed.started_at is None
    assert await claim(backend) is None


async def test_failure_uses_explicit_attempts_instead_of_the_row(backend) -> None:
    claimed = await create_claimed_run(backend, lease_ms=60_000)
    before = now()

    rescheduled = await _fail(backend, claimed, attempts=2)
    assert rescheduled.status == "pending"
    assert rescheduled.available_at is not None
    assert 1900 <= ms_between(rescheduled.available_at, before) < 2500

    again = await create_claimed_run(backend, lease_ms=60_000)
    exhausted = await _fail(backend, again, attempts=3)
    assert exhausted.status == "failed"
    assert exhausted.attempts == 1  # the stored claim count is untouched


async def test_failure_is_refused_to_a_non_owner(backend) -> None:
    claimed = await create_claimed_run(backend, lease_ms=60_000)

    with pytest.raises(WriteConflictError, match="Failed to mark workflow run failed"):
        await backend.fail_workflow_run(
            FailWorkflowRunParams(
                workflow_run_id=claimed.id,
                worker_id=new_id(),
                error={"message": "x"},
                retry_policy=TERMINAL_RETRY_POLICY,
            )
        )

    after = await get_run(backend, claimed.id)
    assert after.status == "running"
    assert after.worker_id == claimed.worker_id
    assert after.error is None


async def test_retryable_child_failure_does_not_wake_the_parked_parent(backend) -> None:
    parent = await create_claimed_run(backend)
    _, child = await create_linked_child(backend, parent)
    await park(backend, parent, now() + timedelta(minutes=5))
    claimed_child = await claim(backend, lease_ms=20)
    assert claimed_child is not None
    assert claimed_child.id == child.id

    failed_child = await _fail(backend, claimed_child, error={"message": "transient child error"})
    assert failed_child.status == "pending"

    parent_after = await get_run(backend, parent.id)
    assert parent_after.status == "running"
    assert parent_after.worker_id is None
    assert parent_after.available_at is not None
    assert parent_after.available_at > now() + timedelta(minutes=4)


async def test_terminal_child_failure_wakes_the_parked_parent(backend) -> None:
    parent = await create_claimed_run(backend)
    _, child = await create_linked_child(backend, parent)
    far_future = now() + timedelta(minutes=5)
    await park(backend, parent, far_future)
    claimed_child = await claim(backend, lease_ms=20)
    assert claimed_child is not None
    assert claimed_child.id == child.id

    failed_child = await _fail(backend, claimed_child, TERMINAL_RETRY_POLICY)
    assert failed_child.status == "failed"

    parent_after = await get_run(backend, parent.id)
    assert parent_after.worker_id is None
    assert parent_after.available_at is not None
    assert parent_after.available_at <= now() + timedelta(seconds=5)


# -- rescheduleWorkflowRunAfterFailedStepAttempt ----------------------------------


async def test_reschedule_after_failed_step_sets_pending_at_the_exact_time(backend) -> None:
    claimed = await create_claimed_run(backend)
    assert claimed.worker_id is not None
    available_at = now() + timedelta(seconds=5)
    error = {"message": "step failed"}

    updated = await backend.reschedule_workflow_run_after_failed_step_attempt(
        RescheduleWorkflowRunAfterFailedStepAttemptParams(
            workflow_run_id=claimed.id,
            worker_id=claimed.worker_id,
            error=error,
            available_at=available_at,
        )
    )

    assert updated.status == "pending"
    assert updated.available_at == available_at
    assert updated.error == error
    assert updated.worker_id is None
    assert updated.started_at is None
    assert updated.finished_at is None
    assert updated.attempts == claimed.attempts
    assert await get_run(backend, claimed.id) == updated


async def test_reschedule_is_refused_to_a_non_owner(backend) -> None:
    claimed = await create_claimed_run(backend)

    with pytest.raises(
        WriteConflictError, match="Failed to reschedule workflow run after failed step attempt"
    ):
        await backend.reschedule_workflow_run_after_failed_step_attempt(
            RescheduleWorkflowRunAfterFailedStepAttemptParams(
                workflow_run_id=claimed.id,
                worker_id=new_id(),
                error={"message": "step failed"},
                available_at=now() + timedelta(seconds=1),
            )
        )

    after = await get_run(backend, claimed.id)
    assert after.status == "running"
    assert after.error is None


# -- deadline_at ------------------------------------------------------------------


async def test_deadline_round_trips_to_the_millisecond(backend) -> None:
    deadline = now() + timedelta(minutes=1, milliseconds=7)

    created = await create_pending_run(backend, deadline_at=deadline)

    assert created.deadline_at == deadline
    assert (await get_run(backend, created.id)).deadline_at == deadline


async def test_run_past_its_deadline_is_not_claimed(backend) -> None:
    await create_pending_run(backend, deadline_at=now() - timedelta(seconds=1))

    assert await claim(backend, lease_ms=1000) is None


async def test_claim_marks_deadline_expired_runs_failed(backend) -> None:
    created = await create_pending_run(backend, deadline_at=now() - timedelta(seconds=1))

    assert await claim(backend, lease_ms=1000) is None

    failed = await get_run(backend, created.id)
    assert failed.status == "failed"
    assert failed.error == DEADLINE_EXCEEDED
    assert failed.finished_at is not None
    assert seconds_from_now(failed.finished_at) < 1
    assert failed.available_at is None
    assert failed.worker_id is None
    assert failed.attempts == 0


async def test_claim_expires_an_owned_running_run_past_its_deadline(backend) -> None:
    owner = await create_claimed_run(
        backend, lease_ms=60_000, deadline_at=now() + timedelta(milliseconds=500)
    )
    await sleep_until_after(owner.deadline_at)

    assert await claim(backend) is None  # another worker's claim runs the sweep

    expired = await get_run(backend, owner.id)
    assert expired.status == "failed"
    assert expired.error == DEADLINE_EXCEEDED
    assert expired.worker_id is None
    assert expired.available_at is None
    with pytest.raises(WriteConflictError, match="Failed to mark workflow run completed"):
        await _complete(backend, owner, "too late")


async def test_failure_whose_backoff_passes_the_deadline_fails_for_good(backend) -> None:
    created = await create_pending_run(backend, deadline_at=now() + timedelta(milliseconds=500))
    claimed = await claim(backend)
    assert claimed is not None
    assert claimed.id == created.id

    failed = await _fail(backend, claimed, error={"message": "test error"})

    assert failed.status == "failed"
    assert failed.error == {"message": "test error"}
    assert failed.available_at is None
    assert failed.finished_at is not None
    assert failed.started_at is None


async def test_failure_well_before_the_deadline_is_rescheduled(backend) -> None:
    created = await create_pending_run(backend, deadline_at=now() + timedelta(seconds=5))
    claimed = await claim(backend)
    assert claimed is not None
    assert claimed.id == created.id

    failed = await _fail(backend, claimed, error={"message": "test error"})

    assert failed.status == "pending"
    assert failed.available_at is not None
    assert failed.available_at < created.deadline_at
    assert failed.finished_at is None


async def test_failure_after_the_deadline_reports_deadline_exceeded(backend) -> None:
    # Time to create and claim it first, even on a loaded machine (a backend's first
    # claim on PostgreSQL opens a claim-pool connection).
    claimed = await create_claimed_run(
        backend, lease_ms=60_000, deadline_at=now() + timedelta(milliseconds=500)
    )
    await sleep_until_after(claimed.deadline_at)

    failed = await _fail(backend, claimed, error={"message": "late"})

    assert failed.status == "failed"
    assert failed.error == DEADLINE_EXCEEDED
    assert failed.available_at is None
    assert failed.finished_at is not None


async def test_sweep_leaves_runs_without_or_before_their_deadline_alone(backend) -> None:
    no_deadline = await create_pending_run(backend, available_at=in_one_year())
    future_deadline = await create_pending_run(
        backend, available_at=in_one_year(), deadline_at=in_one_year() + timedelta(days=1)
    )

    assert await claim(backend) is None

    assert (await get_run(backend, no_deadline.id)).status == "pending"
    assert (await get_run(backend, future_deadline.id)).status == "pending"
