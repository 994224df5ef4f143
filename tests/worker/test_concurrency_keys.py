"""Created runs carry their workflow's concurrency key and limit (``ow.run``, children, ticks).

The key is computed from the validated input (the model, not the JSON) when
the run is created; a key function that raises creates nothing. These tests
read the stored rows: admission by the claim is tested elsewhere.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from openworkflow import Concurrency, OpenWorkflow, Schedule, Step, declare_workflow, workflow
from openworkflow.core.backend import ListWorkflowRunsParams
from openworkflow.core.workflow_run import WorkflowRun
from tests.support.waiting import wait_until
from tests.worker.helpers import get_run, idle_worker, list_steps, now, running_worker


class Job(BaseModel):
    user: str
    size: int = 1


class KeyFailure(Exception):
    """What the failing key function raises."""


def _fail(job: Job) -> str:
    raise KeyFailure(f"no key for {job.user}")


@workflow(name="per-user", concurrency=Concurrency(1, key=lambda i: i.user))
async def per_user(input: Job) -> str:
    return input.user


@workflow(name="by-size", concurrency=Concurrency(3, key=lambda i: i.size))
async def by_size(input: Job) -> int:
    return input.size


@workflow(name="five-at-once", concurrency=5)
async def five_at_once(input: Job) -> None:
    return None


@workflow(name="no-limit")
async def no_limit(input: Job) -> None:
    return None


@workflow(name="bad-key", concurrency=Concurrency(2, key=_fail))
async def bad_key(input: Job) -> None:
    return None


async def runs_of(backend: Any, name: str) -> list[WorkflowRun]:
    page = await backend.list_workflow_runs(ListWorkflowRunsParams(workflow_name=name, limit=100))
    return list(page.data)


def columns(run: WorkflowRun) -> tuple[str | None, int | None]:
    return run.concurrency_key, run.concurrency_limit


# -- ow.run ----------------------------------------------------------------------------


async def test_run_stores_the_key_computed_from_the_validated_input(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    # A dict input: the key function reads an attribute, so it got the model.
    handle = await ow.run(per_user, {"user": "ann"})
    assert handle.workflow_run is not None and columns(handle.workflow_run) == ("ann", 1)
    assert columns(await get_run(backend, handle.id)) == ("ann", 1)

    sized = await ow.run(by_size, Job(user="bob", size=4))  # an int key, stored as text
    assert columns(await get_run(backend, sized.id)) == ("4", 3)


async def test_an_integer_limit_shares_one_key_and_no_limit_stores_none(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    shared = await ow.run(five_at_once, {"user": "ann"})
    plain = await ow.run(no_limit, {"user": "ann"})
    assert columns(await get_run(backend, shared.id)) == ("", 5)
    assert columns(await get_run(backend, plain.id)) == (None, None)


async def test_a_declared_spec_carries_its_limit(backend: Any) -> None:
    spec = declare_workflow("declared-limit", schema=Job, concurrency=Concurrency(2, key=str))
    handle = await OpenWorkflow(backend).run(spec, {"user": "cy"})
    # str() of the model: the key function got the validated model, not the dict.
    assert columns(await get_run(backend, handle.id)) == (str(Job(user="cy")), 2)


async def test_a_raising_key_function_propagates_and_writes_no_run(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    with pytest.raises(KeyFailure, match="no key for ann"):
        await ow.run(bad_key, {"user": "ann"})
    assert await runs_of(backend, "bad-key") == []
    assert (await ow.counts()).pending == 0


# -- child runs ------------------------------------------------------------------------


async def test_a_child_run_carries_its_key(backend: Any) -> None:
    @workflow(name="parent-of-limited")
    async def parent(step: Step) -> str:
        return str(await step.run_workflow(per_user, {"user": "dee"}))

    ow = OpenWorkflow(backend)
    # The worker does not run the child: the parent parks and the child stays pending.
    async with running_worker(backend, [parent]):
        handle = await ow.run(parent)
        (step,) = await _wait_for_linked_step(backend, handle.id)
    child = await get_run(backend, step.child_workflow_run_id or "")
    assert child.workflow_name == "per-user" and child.status == "pending"
    assert columns(child) == ("dee", 1)


async def _wait_for_linked_step(backend: Any, run_id: str) -> list[Any]:
    async def linked() -> list[Any]:
        steps = await list_steps(backend, run_id)
        return steps if steps and steps[0].child_workflow_run_id else []

    return await wait_until(linked, message="the child run to be linked")


async def test_a_raising_child_key_fails_the_step_and_creates_no_child(backend: Any) -> None:
    @workflow(name="parent-of-bad-key")
    async def parent(step: Step) -> str:
        try:
            await step.run_workflow(bad_key, {"user": "eve"})
        except KeyFailure as error:
            return f"caught: {error}"
        return "not reached"

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [parent]):
        handle = await ow.run(parent)
        assert await handle.result(timeout="10s") == "caught: no key for eve"
    assert await runs_of(backend, "bad-key") == []
    (attempt,) = await list_steps(backend, handle.id)
    assert attempt.status == "failed" and attempt.child_workflow_run_id is None
    assert isinstance(attempt.error, dict) and attempt.error["message"] == "no key for eve"


# -- schedule ticks --------------------------------------------------------------------


@workflow(
    name="limited-report",
    schedules=[Schedule("* * * * *", input={"user": "ops"})],
    concurrency=Concurrency(1, key=lambda i: i.user),
)
async def limited_report(input: Job) -> None:
    return None


@workflow(
    name="bad-key-report",
    schedules=[Schedule("* * * * *", input={"user": "ops"})],
    concurrency=Concurrency(1, key=_fail),
)
async def bad_key_report(input: Job) -> None:
    return None


async def test_a_schedule_tick_run_carries_its_key(backend: Any, clock: Any) -> None:
    async with idle_worker(backend, [limited_report]) as worker:
        await worker.run_schedules()  # first seen now: the first tick is the next minute
        clock.advance(timedelta(minutes=1, seconds=5))
        assert await worker.run_schedules() == 1
    (run,) = await runs_of(backend, "limited-report")
    assert run.scheduled_at is not None and run.scheduled_at <= now()
    assert columns(run) == ("ops", 1)


async def test_a_raising_schedule_key_stops_the_schedules_before_any_run(backend: Any) -> None:
    async with idle_worker(backend, [bad_key_report]) as worker:
        with pytest.raises(KeyFailure, match="no key for ops"):
            await worker.run_schedules()
    assert await runs_of(backend, "bad-key-report") == []
