"""Signals to one run (``ow.signal``), end to end on every backend with real workers.

Unlike the broadcast ``send_signal``, a signal sent to one run is kept until
that run's ``wait_for_signal`` of the same name takes it: oldest first, each
by one wait, never by another run.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pydantic import BaseModel

from openworkflow import OpenWorkflow, Step, SyncOpenWorkflow, workflow
from openworkflow.errors import (
    InvalidRunStateError,
    SignalValidationError,
    WorkflowRunNotFoundError,
)
from tests.fixtures.backends import backend_url
from tests.worker.helpers import (
    list_steps,
    new_id,
    running_worker,
    wait_for_parked,
    wait_for_status,
)


class Approval(BaseModel):
    by: str


@workflow(name="gate-then-wait")
async def gate_then_wait(step: Step) -> Any:
    # The gate signal (broadcast) holds the run before its wait on "approve".
    await step.wait_for_signal("gate", timeout="1h")
    return await step.wait_for_signal("approve", timeout="1h")


@workflow(name="two-items")
async def two_items(step: Step) -> list[Any]:
    first = await step.wait_for_signal("item", name="first", timeout="1h")
    second = await step.wait_for_signal("item", name="second", timeout="1h")
    return [first, second]


@workflow(name="one-approval")
async def one_approval(step: Step) -> Any:
    return await step.wait_for_signal("approve", timeout="1h")


@workflow(name="typed-approval")
async def typed_approval(step: Step) -> str:
    answer = await step.wait_for_signal("approve", timeout="1h", schema=Approval)
    assert answer is not None
    return answer["data"].by


async def test_a_signal_sent_before_the_wait_is_received(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    async with running_worker(backend, [gate_then_wait]):
        handle = await ow.run(gate_then_wait)
        await wait_for_parked(backend, handle.id)  # waiting on "gate", not yet on "approve"
        await handle.signal("approve", {"by": "ana"})
        assert await ow.send_signal("gate") == [handle.id]
        assert await handle.result(timeout="10s") == {"data": {"by": "ana"}}
    steps = {step.step_name: step for step in await list_steps(backend, handle.id)}
    assert steps["approve"].status == "completed"
    assert steps["approve"].output == {"data": {"by": "ana"}}


async def test_two_signals_are_consumed_in_order_by_two_waits(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(two_items)
    # Both sent before any worker runs: kept, then taken oldest first.
    await ow.signal(handle.id, "item", "one")
    await ow.signal(handle.id, "item", "two")
    async with running_worker(backend, [two_items]):
        assert await handle.result(timeout="10s") == [{"data": "one"}, {"data": "two"}]


async def test_another_run_never_sees_the_signal(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    async with running_worker(backend, [one_approval], concurrency=2):
        target = await ow.run(one_approval)
        bystander = await ow.run(one_approval)
        await wait_for_parked(backend, target.id)
        await wait_for_parked(backend, bystander.id)
        await target.signal("approve", "for-target")
        assert await target.result(timeout="10s") == {"data": "for-target"}
        await ow.signal(bystander.id, "approve", "for-bystander")
        assert await bystander.result(timeout="10s") == {"data": "for-bystander"}


async def test_a_resend_with_the_same_idempotency_key_is_a_no_op(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(two_items)
    await ow.signal(handle.id, "item", "one", idempotency_key="k1")
    await ow.signal(handle.id, "item", "one again", idempotency_key="k1")
    async with running_worker(backend, [two_items]):
        await wait_for_parked(backend, handle.id)
        first = {step.step_name: step for step in await list_steps(backend, handle.id)}
        assert first["first"].output == {"data": "one"}
        assert first["second"].status == "running"  # the resend was not kept
        await ow.signal(handle.id, "item", "two", idempotency_key="k2")
        assert await handle.result(timeout="10s") == [{"data": "one"}, {"data": "two"}]


async def test_a_parked_waiting_run_is_woken_promptly(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    async with running_worker(backend, [one_approval]):
        handle = await ow.run(one_approval)
        await wait_for_parked(backend, handle.id)
        started = time.monotonic()
        await handle.signal("approve", 42)
        assert await handle.result(timeout="10s") == {"data": 42}
        # The wait parked for an hour: only the send's wake-up ends it this soon.
        assert time.monotonic() - started < 5


async def test_the_payload_is_validated_by_the_wait_schema(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    async with running_worker(backend, [typed_approval]):
        good = await ow.run(typed_approval)
        await ow.signal(good.id, "approve", {"by": "ana"})
        assert await good.result(timeout="10s") == "ana"
        bad = await ow.run(typed_approval)
        await ow.signal(bad.id, "approve", {"nobody": True})
        failed = await wait_for_status(backend, bad.id, "failed")
    assert failed.error is not None
    assert failed.error["name"] == SignalValidationError.__name__


async def test_signaling_a_finished_or_missing_run_raises(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    async with running_worker(backend, [one_approval]):
        handle = await ow.run(one_approval)
        await handle.signal("approve", "done")
        await handle.result(timeout="10s")
    with pytest.raises(InvalidRunStateError, match=rf"{handle.id}.*completed"):
        await handle.signal("approve", "too late")
    missing = new_id()
    with pytest.raises(WorkflowRunNotFoundError, match=missing):
        await ow.signal(missing, "approve")


@pytest.mark.parametrize("bad", ["", 3])
async def test_bad_signal_names_are_refused(backend: Any, bad: Any) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(one_approval)
    with pytest.raises(TypeError, match="signal must be a non-empty string"):
        await ow.signal(handle.id, bad)


async def test_the_sync_client_signals_one_run(backend: Any, backend_kind: str) -> None:
    if backend_kind == "sqlite_memory":
        pytest.skip("a ':memory:' SQLite database cannot be opened by a second client")
    url = backend_url(backend_kind, backend)
    assert url is not None
    namespace_id = backend.namespace_id
    ow = OpenWorkflow(backend)
    handle = await ow.run(two_items)

    def blocking_sender() -> None:
        with SyncOpenWorkflow(url, namespace_id=namespace_id) as client:
            client.signal(handle.id, "item", "one")
            client.handle(handle.id).signal("item", "two")

    await asyncio.to_thread(blocking_sender)
    async with running_worker(backend, [two_items]):
        assert await handle.result(timeout="10s") == [{"data": "one"}, {"data": "two"}]
