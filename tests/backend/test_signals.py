"""sendSignal and getSignalDelivery."""

from __future__ import annotations

from datetime import timedelta

import pytest

from openworkflow.core.backend import (
    CancelWorkflowRunParams,
    CompleteStepAttemptParams,
    CompleteWorkflowRunParams,
    GetSignalDeliveryParams,
    SendSignalParams,
    SignalDelivery,
)
from tests.backend.helpers import (
    create_claimed_run,
    create_parked_signal_waiter,
    create_signal_wait,
    get_run,
    new_id,
    now,
)


async def _send(backend, signal: str, data: object = None, key: str | None = None) -> list[str]:
    result = await backend.send_signal(
        SendSignalParams(signal=signal, data=data, idempotency_key=key)
    )
    return result.workflow_run_ids


async def _delivery(backend, step_attempt_id: str) -> SignalDelivery | None:
    return await backend.get_signal_delivery(
        GetSignalDeliveryParams(step_attempt_id=step_attempt_id)
    )


# -- sendSignal -------------------------------------------------------------------------


async def test_send_without_waiters_returns_no_runs(backend) -> None:
    assert await _send(backend, f"no-waiters-{new_id()}", {"value": 42}) == []


async def test_send_delivers_to_a_parked_waiter_and_wakes_it(backend) -> None:
    signal = f"test-signal-{new_id()}"
    run, step = await create_parked_signal_waiter(backend, signal)

    delivered_to = await _send(backend, signal, {"approved": True})

    assert delivered_to == [run.id]
    assert await _delivery(backend, step.id) == SignalDelivery(data={"approved": True})
    woken = await get_run(backend, run.id)
    assert woken.status == "running"
    assert woken.worker_id is None
    assert woken.available_at is not None
    assert woken.available_at <= now() + timedelta(seconds=5)


async def test_send_fans_out_to_every_waiter(backend) -> None:
    signal = f"fan-out-{new_id()}"
    waiters = [await create_parked_signal_waiter(backend, signal) for _ in range(3)]

    delivered_to = await _send(backend, signal, "hello")

    assert len(delivered_to) == 3
    assert set(delivered_to) == {run.id for run, _ in waiters}
    for run, step in waiters:
        assert await _delivery(backend, step.id) == SignalDelivery(data="hello")
        assert (await get_run(backend, run.id)).available_at <= now() + timedelta(seconds=5)


async def test_send_only_matches_the_exact_signal_name(backend) -> None:
    signal = f"exact-{new_id()}"
    _, step = await create_parked_signal_waiter(backend, signal)

    assert await _send(backend, signal + "-suffix", 1) == []
    assert await _send(backend, signal.upper(), 1) == []

    assert await _delivery(backend, step.id) is None


async def test_send_skips_waits_that_are_no_longer_running(backend) -> None:
    signal = f"finished-wait-{new_id()}"
    run = await create_claimed_run(backend, lease_ms=60_000)
    assert run.worker_id is not None
    step = await create_signal_wait(backend, run, signal)
    await backend.complete_step_attempt(
        CompleteStepAttemptParams(
            workflow_run_id=run.id, step_attempt_id=step.id, worker_id=run.worker_id, output=None
        )
    )

    assert await _send(backend, signal, 1) == []
    assert await _delivery(backend, step.id) is None


async def test_send_does_not_reach_other_namespaces(backend, make_backend) -> None:
    other = make_backend(new_id())
    signal = f"namespaced-{new_id()}"
    foreign_run, foreign_step = await create_parked_signal_waiter(other, signal)

    assert await _send(backend, signal, 1) == []
    assert await _delivery(other, foreign_step.id) is None

    assert await _send(other, signal, 2) == [foreign_run.id]
    assert await _delivery(other, foreign_step.id) == SignalDelivery(data=2)


async def test_send_delivers_to_an_owned_waiter_without_disturbing_its_lease(backend) -> None:
    signal = f"owned-{new_id()}"
    run = await create_claimed_run(backend, lease_ms=60_000)
    step = await create_signal_wait(backend, run, signal)

    assert await _send(backend, signal, {"x": 1}) == [run.id]

    assert await _delivery(backend, step.id) == SignalDelivery(data={"x": 1})
    after = await get_run(backend, run.id)
    assert after.worker_id == run.worker_id
    assert after.available_at == run.available_at


async def test_idempotent_resend_returns_the_same_runs(backend) -> None:
    signal = f"idempotent-{new_id()}"
    key = new_id()
    run, _ = await create_parked_signal_waiter(backend, signal)

    first = await _send(backend, signal, {"val": 1}, key)
    second = await _send(backend, signal, {"val": 2}, key)

    assert first == [run.id]
    assert second == first


async def test_idempotent_resend_after_the_recipient_was_canceled(backend) -> None:
    signal = f"idempotent-cancel-{new_id()}"
    key = new_id()
    run, _ = await create_parked_signal_waiter(backend, signal)

    first = await _send(backend, signal, {"val": 1}, key)
    await backend.cancel_workflow_run(CancelWorkflowRunParams(workflow_run_id=run.id))
    second = await _send(backend, signal, {"val": 2}, key)

    assert first == [run.id]
    assert second == first


async def test_two_sends_without_a_key_keep_only_the_first_payload(backend) -> None:
    signal = f"dup-send-{new_id()}"
    _, step = await create_parked_signal_waiter(backend, signal)

    await _send(backend, signal, {"first": True})
    await _send(backend, signal, {"second": True})

    assert await _delivery(backend, step.id) == SignalDelivery(data={"first": True})


async def test_two_sends_with_the_same_key_keep_the_original_payload(backend) -> None:
    signal = f"idem-dup-{new_id()}"
    key = new_id()
    _, step = await create_parked_signal_waiter(backend, signal)

    await _send(backend, signal, {"original": True}, key)
    await _send(backend, signal, {"duplicate": True}, key)

    assert await _delivery(backend, step.id) == SignalDelivery(data={"original": True})


async def test_idempotent_resend_does_not_deliver_to_new_waiters(backend) -> None:
    signal = f"idem-new-waiter-{new_id()}"
    key = new_id()
    first_run, _ = await create_parked_signal_waiter(backend, signal)
    assert await _send(backend, signal, 1, key) == [first_run.id]

    _, late_step = await create_parked_signal_waiter(backend, signal)

    assert await _send(backend, signal, 2, key) == [first_run.id]
    assert await _delivery(backend, late_step.id) is None


async def test_key_whose_first_send_found_no_waiters_is_not_remembered(backend) -> None:
    signal = f"unbuffered-{new_id()}"
    key = new_id()

    assert await _send(backend, signal, "lost", key) == []

    run, step = await create_parked_signal_waiter(backend, signal)
    assert await _send(backend, signal, "kept", key) == [run.id]
    assert await _delivery(backend, step.id) == SignalDelivery(data="kept")


# -- getSignalDelivery ------------------------------------------------------------------


async def test_get_delivery_is_none_when_nothing_was_delivered(backend) -> None:
    run = await create_claimed_run(backend)
    step = await create_signal_wait(backend, run, f"no-delivery-{new_id()}")

    assert await _delivery(backend, step.id) is None
    assert await _delivery(backend, new_id()) is None


async def test_get_delivery_distinguishes_delivered_null_data(backend) -> None:
    signal = f"null-data-{new_id()}"
    run, step = await create_parked_signal_waiter(backend, signal)

    assert await _send(backend, signal, None) == [run.id]

    delivery = await _delivery(backend, step.id)
    assert delivery is not None
    assert delivery.data is None


@pytest.mark.parametrize("data", [0, "", [], {}, False, [1, {"a": None}], 3.5])
async def test_get_delivery_round_trips_json_values(backend, data: object) -> None:
    signal = f"payload-{new_id()}"
    _, step = await create_parked_signal_waiter(backend, signal)

    await _send(backend, signal, data)

    delivery = await _delivery(backend, step.id)
    assert delivery == SignalDelivery(data=data)
    assert type(delivery.data) is type(data)


@pytest.mark.parametrize("finish", ["cancel", "complete"])
async def test_send_skips_waiters_whose_run_has_finished(backend, finish: str) -> None:
    signal = f"finished-run-{new_id()}"
    if finish == "cancel":
        gone, gone_step = await create_parked_signal_waiter(backend, signal)
        await backend.cancel_workflow_run(CancelWorkflowRunParams(workflow_run_id=gone.id))
    else:
        gone = await create_claimed_run(backend, lease_ms=60_000)
        assert gone.worker_id is not None
        gone_step = await create_signal_wait(backend, gone, signal)
        await backend.complete_workflow_run(
            CompleteWorkflowRunParams(workflow_run_id=gone.id, worker_id=gone.worker_id, output=1)
        )
    active, active_step = await create_parked_signal_waiter(backend, signal)

    assert await _send(backend, signal, {"approved": True}) == [active.id]

    assert await _delivery(backend, gone_step.id) is None
    assert await _delivery(backend, active_step.id) == SignalDelivery(data={"approved": True})
    gone_after = await get_run(backend, gone.id)
    assert gone_after.available_at is None
