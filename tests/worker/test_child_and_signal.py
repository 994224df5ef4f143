"""Child workflows and signals at the step level, end to end on every backend.

``step.run_workflow`` starts a child once and waits for it (parking the
parent); ``step.send_signal`` / ``ow.send_signal`` deliver to every run
waiting on a signal; ``step.wait_for_signal`` parks until a delivery or its
timeout. Races and large fan-outs live in ``test_child_and_signal_races.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from openworkflow import OpenWorkflow, RetryPolicy, Step, workflow
from openworkflow.errors import (
    ChildWorkflowCanceledError,
    ChildWorkflowFailedError,
    ChildWorkflowTimeoutError,
    InputValidationError,
    SignalValidationError,
    SignalWaitConflictError,
)
from tests.support.waiting import wait_until
from tests.worker.helpers import (
    list_steps,
    running_worker,
    steps_by_name,
    wait_for_parked,
    wait_for_status,
)


class Amount(BaseModel):
    cents: int


@workflow(name="double-it")
async def double_it(input: int, step: Step) -> int:
    return await step.run("double", lambda: input * 2)


@workflow(name="fail-child")
async def fail_child(step: Step) -> None:
    await step.run("boom", _raise_lookup, retry_policy=RetryPolicy(maximum_attempts=1))


def _raise_lookup() -> None:
    raise LookupError("no such thing")


@workflow(name="typed-child")
async def typed_child(input: Amount) -> int:
    return input.cents


@workflow(name="waiting-child")
async def waiting_child(step: Step) -> Any:
    return await step.wait_for_signal("release-child", timeout="1h")


async def _children_of(backend: Any, ow: OpenWorkflow, name: str) -> list[Any]:
    page = await ow.list_runs(workflow_name=name, limit=100)
    return page.data


# -- run_workflow ------------------------------------------------------------------------


async def test_run_workflow_returns_the_child_output_and_links_both_ways(backend: Any) -> None:
    @workflow(name="parent-doubles")
    async def parent(step: Step) -> int:
        first = await step.run_workflow(double_it, 21)
        second = await step.run_workflow(double_it, 5)  # same base name: "double-it:1"
        return first + second

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [parent, double_it], concurrency=2):
        handle = await ow.run(parent)
        assert await handle.result(timeout="10s") == 52
    steps = steps_by_name(await list_steps(backend, handle.id))
    assert set(steps) == {"double-it", "double-it:1"}
    link = steps["double-it"]
    assert link.kind == "workflow" and link.status == "completed" and link.output == 42
    assert isinstance(link.context, dict) and link.context["kind"] == "workflow"
    child = await ow.get_run(link.child_workflow_run_id or "")
    assert child is not None and child.status == "completed"
    assert child.parent_step_attempt_id == link.id
    assert child.idempotency_key == f"__workflow:{link.namespace_id}:{link.id}"
    assert child.deadline_at is None
    assert len(await _children_of(backend, ow, "double-it")) == 2


async def test_child_input_is_validated_before_the_child_exists(backend: Any) -> None:
    @workflow(name="parent-bad-input")
    async def parent(step: Step) -> str:
        try:
            await step.run_workflow(typed_child, {"cents": "lots"}, name="typed")
        except InputValidationError as error:
            return f"caught: {error.workflow_name}"
        return "not reached"

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [parent, typed_child]):
        handle = await ow.run(parent)
        assert await handle.result(timeout="10s") == "caught: typed-child"
    assert await _children_of(backend, ow, "typed-child") == []
    (attempt,) = await list_steps(backend, handle.id)
    assert attempt.status == "failed" and attempt.child_workflow_run_id is None


async def test_a_failed_child_raises_a_catchable_error_in_the_parent(backend: Any) -> None:
    @workflow(name="parent-catches-failure")
    async def parent(step: Step) -> dict[str, Any]:
        try:
            await step.run_workflow(fail_child)
        except ChildWorkflowFailedError as error:
            return {"message": str(error), "child": error.workflow_run_id}
        return {}

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [parent, fail_child], concurrency=2):
        handle = await ow.run(parent)
        result = await handle.result(timeout="20s")
    assert result["message"] == "no such thing"
    child = await ow.get_run(result["child"])
    assert child is not None and child.status == "failed"


async def test_an_uncaught_child_failure_fails_the_parent_without_retrying_the_child(
    backend: Any,
) -> None:
    @workflow(name="parent-lets-failure-through")
    async def parent(step: Step) -> None:
        await step.run_workflow(fail_child)

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [parent, fail_child], concurrency=2):
        handle = await ow.run(parent)
        done = await wait_for_status(backend, handle.id, "failed", "completed", timeout=20)
    assert done.status == "failed"
    assert done.error["name"] == "ChildWorkflowFailedError"
    assert len(await _children_of(backend, ow, "fail-child")) == 1


async def test_a_canceled_child_raises_in_the_parent(backend: Any) -> None:
    @workflow(name="parent-of-canceled")
    async def parent(step: Step) -> str:
        try:
            await step.run_workflow(waiting_child, name="waiter")
        except ChildWorkflowCanceledError as error:
            return str(error)
        return "not reached"

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [parent, waiting_child], concurrency=2):
        handle = await ow.run(parent)
        children = await wait_until(
            lambda: _children_of(backend, ow, "waiting-child"), message="the child"
        )
        await wait_for_parked(backend, children[0].id)
        await ow.cancel(children[0].id)
        message = await handle.result(timeout="10s")
    assert "was canceled" in message and children[0].id in message


async def test_a_timeout_raises_in_the_parent_while_the_child_keeps_running(
    backend: Any,
) -> None:
    @workflow(name="parent-times-out")
    async def parent(step: Step) -> str:
        try:
            await step.run_workflow(waiting_child, timeout="300ms")
        except ChildWorkflowTimeoutError as error:
            return f"timed out: {error}"
        return "not reached"

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [parent, waiting_child], concurrency=2):
        handle = await ow.run(parent)
        assert await handle.result(timeout="10s") == (
            "timed out: Timed out waiting for child workflow to complete"
        )
        (child,) = await _children_of(backend, ow, "waiting-child")
        assert child.status in ("pending", "running")
        assert await ow.send_signal("release-child", "free") == [child.id]
        assert await ow.handle(child.id).result(timeout="10s") == {"data": "free"}


async def test_the_child_is_created_once_across_replays(backend: Any) -> None:
    @workflow(name="parent-replays")
    async def parent(step: Step) -> list[int]:
        value = await step.run_workflow(double_it, 4)
        await step.sleep("pause", "50ms")  # a second pass replays the child step
        again = await step.run_workflow(double_it, 8)
        return [value, again]

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [parent, double_it], concurrency=2):
        handle = await ow.run(parent)
        assert await handle.result(timeout="10s") == [8, 16]
    assert len(await _children_of(backend, ow, "double-it")) == 2


# -- signals -----------------------------------------------------------------------------


async def test_wait_for_signal_receives_data_sent_by_the_client(backend: Any) -> None:
    @workflow(name="approval")
    async def approval(step: Step) -> Any:
        return await step.wait_for_signal("approve", timeout="1h")

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [approval]):
        handle = await ow.run(approval)
        await wait_for_parked(backend, handle.id)
        assert await ow.send_signal("approve", {"by": "ana"}) == [handle.id]
        assert await handle.result(timeout="10s") == {"data": {"by": "ana"}}
    (attempt,) = await list_steps(backend, handle.id)
    assert attempt.kind == "signal-wait" and attempt.status == "completed"
    assert attempt.context["signal"] == "approve"
    assert await ow.send_signal("approve", "late") == []  # nobody waits any more


async def test_a_wait_times_out_to_none(backend: Any) -> None:
    @workflow(name="short-wait")
    async def short_wait(step: Step) -> Any:
        return {"got": await step.wait_for_signal("never", timeout="200ms")}

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [short_wait]):
        handle = await ow.run(short_wait)
        assert await handle.result(timeout="10s") == {"got": None}


async def test_signals_fan_out_once_per_waiting_run_and_resends_are_idempotent(
    backend: Any,
) -> None:
    @workflow(name="fan-waiter")
    async def waiter(step: Step) -> Any:
        return await step.wait_for_signal("go")

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [waiter], concurrency=3):
        handles = [await ow.run(waiter) for _ in range(3)]
        for handle in handles:
            await wait_for_parked(backend, handle.id)
        first = await ow.send_signal("go", 1, idempotency_key="k")
        assert sorted(first) == sorted(h.id for h in handles)
        assert sorted(await ow.send_signal("go", 2, idempotency_key="k")) == sorted(first)
        for handle in handles:
            assert await handle.result(timeout="10s") == {"data": 1}


async def test_send_signal_step_returns_ids_and_is_replay_safe(backend: Any) -> None:
    @workflow(name="signal-receiver")
    async def receiver(step: Step) -> Any:
        return await step.wait_for_signal("ping")

    @workflow(name="signal-sender")
    async def sender(step: Step) -> list[str]:
        ids = await step.send_signal("ping", {"n": 1})
        await step.sleep("pause", "50ms")  # replay: the send is not repeated
        return ids

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [receiver, sender], concurrency=2):
        receiving = await ow.run(receiver)
        await wait_for_parked(backend, receiving.id)
        sending = await ow.run(sender)
        assert await sending.result(timeout="10s") == [receiving.id]
        assert await receiving.result(timeout="10s") == {"data": {"n": 1}}
    steps = steps_by_name(await list_steps(backend, sending.id))
    assert steps["ping"].kind == "signal-send"
    assert steps["ping"].output == {"workflowRunIds": [receiving.id]}


async def test_a_schema_parses_the_payload_or_fails_the_wait(backend: Any) -> None:
    @workflow(name="typed-wait")
    async def typed_wait(step: Step) -> int:
        received = await step.wait_for_signal("pay", schema=Amount)
        assert received is not None
        await step.sleep("pause", "10ms")  # the replay parses the stored value again
        assert isinstance(received["data"], Amount)
        return received["data"].cents

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [typed_wait]):
        good = await ow.run(typed_wait)
        await wait_for_parked(backend, good.id)
        await ow.send_signal("pay", {"cents": 250})
        assert await good.result(timeout="10s") == 250

        bad = await ow.run(typed_wait)
        await wait_for_parked(backend, bad.id)
        await ow.send_signal("pay", {"cents": "many"})
        done = await wait_for_status(backend, bad.id, "failed", "completed")
    assert done.status == "failed"
    assert done.error["name"] == SignalValidationError.__name__
    assert done.error["message"].startswith("Signal schema validation failed:")


async def test_two_waits_on_one_signal_in_one_run_are_an_error(backend: Any) -> None:
    @workflow(name="double-wait")
    async def double_wait(step: Step) -> str:
        try:
            await asyncio.gather(
                step.wait_for_signal("same", name="first"),
                step.wait_for_signal("same", name="second"),
            )
        except SignalWaitConflictError as error:
            return str(error)
        return "not reached"

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [double_wait]):
        handle = await ow.run(double_wait)
        assert await handle.result(timeout="10s") == (
            'Signal "same" is already being waited on by step "first"'
        )


@pytest.mark.parametrize("bad", ["", 3])
async def test_bad_signal_names_are_refused(backend: Any, bad: Any) -> None:
    ow = OpenWorkflow(backend)
    with pytest.raises(TypeError, match="signal must be a non-empty string"):
        await ow.send_signal(bad)
