"""``ow.fork(run_id, from_step=NAME)``: rerun a finished run from a step, after a fix.

End to end with real workers on every backend: the steps before NAME are not
executed again (their recorded outputs replay), NAME and the steps after it
run, the fork is linked to its source, and bad requests are clear errors.
"""

from __future__ import annotations

from typing import Any

import pytest

from openworkflow import OpenWorkflow, RetryPolicy, Step, workflow
from openworkflow.errors import (
    ForkStepNotFoundError,
    InvalidRunStateError,
    WorkflowFailedError,
    WorkflowRunNotFoundError,
)
from tests.worker.helpers import list_steps, new_id, running_worker

CALLS: list[str] = []
CHARGE_WORKS = {"now": False}


def reserve(order: int) -> str:
    CALLS.append("reserve")
    return f"reserved-{order}"


def charge(order: int) -> str:
    CALLS.append("charge")
    if not CHARGE_WORKS["now"]:
        raise RuntimeError("the payment service rejected the card")
    return f"charged-{order}"


def ship(order: int) -> str:
    CALLS.append("ship")
    return f"shipped-{order}"


@workflow(name="fork-checkout")
async def checkout(input: int, step: Step) -> list[str]:
    once = RetryPolicy(maximum_attempts=1)
    reserved = await step.run("reserve", reserve, input)
    await step.sleep("cool-off", "10ms")  # a replay between the first step and the failure
    charged = await step.run("charge", charge, input, retry_policy=once)
    shipped = await step.run("ship", ship, input)
    return [reserved, charged, shipped]


@workflow(name="fork-waits")
async def waits(step: Step) -> str:
    await step.wait_for_signal("go", timeout="1h")
    return "done"


async def _failed_checkout(ow: OpenWorkflow, backend: Any, order: int) -> str:
    handle = await ow.run(checkout, order)
    async with running_worker(backend, [checkout]):
        with pytest.raises(WorkflowFailedError, match="rejected the card"):
            await handle.result(timeout="10s")
    return handle.id


async def test_a_fork_reruns_from_the_step_without_running_earlier_steps(backend: Any) -> None:
    CALLS.clear()
    CHARGE_WORKS["now"] = False
    ow = OpenWorkflow(backend)
    source_id = await _failed_checkout(ow, backend, 7)
    assert CALLS == ["reserve", "charge"]
    CHARGE_WORKS["now"] = True  # the fix
    CALLS.clear()
    fork = await ow.fork(source_id, from_step="charge")
    assert fork.id != source_id
    async with running_worker(backend, [checkout]):
        assert await fork.result(timeout="10s") == ["reserved-7", "charged-7", "shipped-7"]
    assert CALLS == ["charge", "ship"]  # reserve and the sleep replayed from the copies
    names = [(a.step_name, a.status) for a in await list_steps(backend, fork.id)]
    assert names[:2] == [("reserve", "completed"), ("cool-off", "completed")]
    assert ("charge", "completed") in names and ("charge", "failed") not in names
    link = await backend.get_run_fork(fork.id)
    assert link is not None and (link.forked_from_id, link.from_step) == (source_id, "charge")
    source = await ow.get_run(source_id)
    assert source is not None and source.status == "failed"  # the source stays as it was


async def test_a_fork_may_start_with_a_new_input(backend: Any) -> None:
    CHARGE_WORKS["now"] = False
    ow = OpenWorkflow(backend)
    source_id = await _failed_checkout(ow, backend, 8)
    CHARGE_WORKS["now"] = True
    fork = await ow.fork(source_id, from_step="reserve", input=9)
    async with running_worker(backend, [checkout]):
        assert await fork.result(timeout="10s") == ["reserved-9", "charged-9", "shipped-9"]


async def test_bad_forks_are_clear_errors(backend: Any) -> None:
    CHARGE_WORKS["now"] = False
    ow = OpenWorkflow(backend)
    source_id = await _failed_checkout(ow, backend, 1)
    with pytest.raises(ForkStepNotFoundError, match=r"'refund'.*'reserve', 'cool-off', 'charge'"):
        await ow.fork(source_id, from_step="refund")
    with pytest.raises(WorkflowRunNotFoundError):
        await ow.fork(new_id(), from_step="charge")
    waiting = await ow.run(waits)
    with pytest.raises(InvalidRunStateError, match="only a finished run can be forked"):
        await ow.fork(waiting.id, from_step="go")
    assert await backend.list_run_forks(source_id) == []
