"""send_run_message and take_run_message: messages kept for one run, taken in order, once."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from openworkflow.core.backend import CancelWorkflowRunParams, CompleteWorkflowRunParams
from openworkflow.core.messages import SendRunMessageParams, TakenMessage, TakeRunMessageParams
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import (
    InvalidRunStateError,
    WorkflowRunNotFoundError,
    WriteConflictError,
)
from tests.backend.helpers import (
    claim,
    create_claimed_run,
    create_parked_signal_waiter,
    create_pending_run,
    create_signal_wait,
    get_run,
    new_id,
    now,
    park,
)


async def _send(
    backend: Any, run_id: str, signal: str, data: Any = None, key: str | None = None
) -> None:
    await backend.send_run_message(
        SendRunMessageParams(workflow_run_id=run_id, signal=signal, data=data, idempotency_key=key)
    )


async def _take(
    backend: Any, run: WorkflowRun, signal: str, step_id: str | None = None
) -> TakenMessage:
    assert run.worker_id is not None
    return await backend.take_run_message(
        TakeRunMessageParams(
            workflow_run_id=run.id,
            worker_id=run.worker_id,
            signal=signal,
            step_attempt_id=step_id or new_id(),
        )
    )


# -- send --------------------------------------------------------------------------------


async def test_send_to_a_missing_run_raises_not_found(backend: Any) -> None:
    missing = new_id()
    with pytest.raises(WorkflowRunNotFoundError, match=missing):
        await _send(backend, missing, "approve")


async def test_send_to_a_completed_run_raises_invalid_state(backend: Any) -> None:
    run = await create_claimed_run(backend)
    assert run.worker_id is not None
    await backend.complete_workflow_run(
        CompleteWorkflowRunParams(workflow_run_id=run.id, worker_id=run.worker_id, output=None)
    )
    with pytest.raises(InvalidRunStateError, match=rf"{run.id}.*completed"):
        await _send(backend, run.id, "approve")


async def test_send_to_a_canceled_run_raises_invalid_state(backend: Any) -> None:
    run = await create_pending_run(backend)
    await backend.cancel_workflow_run(CancelWorkflowRunParams(workflow_run_id=run.id))
    with pytest.raises(InvalidRunStateError, match=rf"{run.id}.*canceled"):
        await _send(backend, run.id, "approve")


async def test_a_pending_run_keeps_the_message_until_it_takes_it(backend: Any) -> None:
    run = await create_pending_run(backend)
    await _send(backend, run.id, "approve", {"ok": True})

    mine = await claim(backend)

    assert mine is not None and mine.id == run.id
    assert await _take(backend, mine, "approve") == TakenMessage(found=True, data={"ok": True})


async def test_a_repeated_idempotency_key_is_a_no_op(backend: Any) -> None:
    run = await create_claimed_run(backend)
    await _send(backend, run.id, "approve", 1, key="k")
    await _send(backend, run.id, "approve", 2, key="k")
    await _send(backend, run.id, "approve", 3, key="other")

    assert await _take(backend, run, "approve") == TakenMessage(found=True, data=1)
    assert await _take(backend, run, "approve") == TakenMessage(found=True, data=3)
    assert await _take(backend, run, "approve") == TakenMessage(found=False)


async def test_the_same_key_on_another_name_or_run_is_another_message(backend: Any) -> None:
    first = await create_claimed_run(backend)
    second = await create_claimed_run(backend)
    await _send(backend, first.id, "approve", "a", key="k")
    await _send(backend, first.id, "reject", "b", key="k")
    await _send(backend, second.id, "approve", "c", key="k")

    assert (await _take(backend, first, "approve")).data == "a"
    assert (await _take(backend, first, "reject")).data == "b"
    assert (await _take(backend, second, "approve")).data == "c"


async def test_send_wakes_a_run_parked_in_a_wait_on_that_name(backend: Any) -> None:
    signal = f"approve-{new_id()}"
    run, _ = await create_parked_signal_waiter(backend, signal)

    await _send(backend, run.id, signal, {"ok": True})

    woken = await get_run(backend, run.id)
    assert woken.worker_id is None
    assert woken.available_at is not None
    assert woken.available_at <= now() + timedelta(seconds=5)


async def test_send_leaves_a_run_parked_on_another_name_asleep(backend: Any) -> None:
    run, _ = await create_parked_signal_waiter(backend, f"approve-{new_id()}")

    await _send(backend, run.id, "something-else", 1)

    parked = await get_run(backend, run.id)
    assert parked.available_at is not None
    assert parked.available_at > now() + timedelta(days=300)


async def test_parking_after_a_message_arrived_wakes_the_run_at_once(backend: Any) -> None:
    # The send saw an owned run (no wake-up); parking must not miss the message.
    signal = f"approve-{new_id()}"
    run = await create_claimed_run(backend)
    await create_signal_wait(backend, run, signal)
    await _send(backend, run.id, signal, 1)

    parked = await park(backend, run, now() + timedelta(days=365))
    current = await get_run(backend, run.id)
    assert parked.worker_id is None
    assert current.available_at is not None
    assert current.available_at <= now() + timedelta(seconds=5)


# -- take --------------------------------------------------------------------------------


async def test_take_returns_messages_in_send_order(backend: Any) -> None:
    run = await create_claimed_run(backend)
    for value in range(5):
        await _send(backend, run.id, "item", value)

    taken = [(await _take(backend, run, "item")).data for _ in range(5)]

    assert taken == [0, 1, 2, 3, 4]
    assert await _take(backend, run, "item") == TakenMessage(found=False)


async def test_a_null_payload_is_found(backend: Any) -> None:
    run = await create_claimed_run(backend)
    await _send(backend, run.id, "ping")
    assert await _take(backend, run, "ping") == TakenMessage(found=True, data=None)
    assert await _take(backend, run, "ping") == TakenMessage(found=False)


async def test_take_is_per_run_and_per_name(backend: Any) -> None:
    first = await create_claimed_run(backend)
    second = await create_claimed_run(backend)
    await _send(backend, first.id, "approve", "for-first")

    assert await _take(backend, second, "approve") == TakenMessage(found=False)
    assert await _take(backend, first, "reject") == TakenMessage(found=False)
    assert await _take(backend, first, "approve") == TakenMessage(found=True, data="for-first")


async def test_the_same_attempt_gets_its_message_again(backend: Any) -> None:
    run = await create_claimed_run(backend)
    await _send(backend, run.id, "item", "one")
    await _send(backend, run.id, "item", "two")
    attempt = new_id()

    assert (await _take(backend, run, "item", attempt)).data == "one"
    assert (await _take(backend, run, "item", attempt)).data == "one"
    assert (await _take(backend, run, "item")).data == "two"
    assert (await _take(backend, run, "item", attempt)).data == "one"


async def test_take_is_fenced_by_ownership(backend: Any) -> None:
    run = await create_claimed_run(backend)
    await _send(backend, run.id, "item", "kept")
    with pytest.raises(WriteConflictError):
        await backend.take_run_message(
            TakeRunMessageParams(
                workflow_run_id=run.id, worker_id=new_id(), signal="item", step_attempt_id=new_id()
            )
        )
    # The refused take consumed nothing.
    assert (await _take(backend, run, "item")).data == "kept"


async def test_concurrent_takers_never_get_the_same_message(backend: Any) -> None:
    run = await create_claimed_run(backend)
    count = 20
    for value in range(count):
        await _send(backend, run.id, "item", value)

    results = await asyncio.gather(*(_take(backend, run, "item") for _ in range(count + 5)))

    values = [result.data for result in results if result.found]
    assert sorted(values) == list(range(count))
    assert sum(not result.found for result in results) == 5
