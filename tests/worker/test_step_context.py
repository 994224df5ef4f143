"""``openworkflow.step_context()`` inside step bodies, async and sync (SPEC §12)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from openworkflow import (
    NotInStepError,
    OpenWorkflow,
    RetryAfter,
    RetryPolicy,
    Step,
    StepContext,
    step_context,
    workflow,
)
from openworkflow.core import clock
from tests.worker.helpers import FAST_RETRY, running_worker

ONE_ATTEMPT = RetryPolicy(maximum_attempts=1)
ISSUED = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)


# -- step_context() ---------------------------------------------------------------


@pytest.mark.parametrize("body_kind", ["async", "sync"])
async def test_step_context_describes_each_attempt(backend: Any, body_kind: str) -> None:
    contexts: list[StepContext] = []

    def sync_body() -> str:
        contexts.append(step_context())
        if len(contexts) < 3:
            raise ConnectionError("try again")
        return "charged"

    async def async_body() -> str:
        return sync_body()

    body = async_body if body_kind == "async" else sync_body

    @workflow(name="context-attempts")
    async def caller(step: Step) -> str:
        return str(await step.run("charge", body, retry_policy=FAST_RETRY))

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [caller]):
        handle = await ow.run(caller)
        assert await handle.result(timeout="10s") == "charged"
    assert [c.attempt for c in contexts] == [1, 2, 3]
    assert {(c.run_id, c.workflow_name, c.step_name) for c in contexts} == {
        (handle.id, "context-attempts", "charge")
    }
    assert [c.deadline for c in contexts] == [None, None, None]
    assert [c.cancel_requested for c in contexts] == [False, False, False]


async def test_a_retry_after_deferral_is_not_counted_as_an_attempt(backend: Any) -> None:
    attempts: list[int] = []

    def rate_limited() -> str:
        attempts.append(step_context().attempt)
        if len(attempts) == 1:
            raise RetryAfter("10ms", "429")
        if len(attempts) == 2:
            raise ConnectionError("reset")
        return "served"

    @workflow(name="context-deferral")
    async def caller(step: Step) -> str:
        return str(await step.run("call", rate_limited, retry_policy=FAST_RETRY))

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [caller]):
        handle = await ow.run(caller)
        assert await handle.result(timeout="10s") == "served"
    assert attempts == [1, 1, 2]


@pytest.mark.parametrize("body_kind", ["async", "sync"])
@pytest.mark.parametrize(
    "timeout", ["2s", 2, 2.0, timedelta(seconds=2)], ids=["string", "int", "float", "timedelta"]
)
async def test_the_deadline_is_when_the_attempts_timeout_runs_out(
    backend: Any, body_kind: str, timeout: Any
) -> None:
    seen: list[tuple[datetime | None, datetime]] = []

    def sync_body() -> None:
        seen.append((step_context().deadline, clock.now()))

    async def async_body() -> None:
        sync_body()

    body = async_body if body_kind == "async" else sync_body

    @workflow(name="context-deadline")
    async def caller(step: Step) -> None:
        await step.run("bounded", body, timeout=timeout)

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [caller]):
        handle = await ow.run(caller)
        await handle.result(timeout="10s")
    [(deadline, started)] = seen
    assert deadline is not None
    assert timedelta(seconds=1.5) < deadline - started <= timedelta(seconds=2)


async def test_repeated_and_parallel_steps_see_their_own_names(backend: Any) -> None:
    def own_name() -> str:
        return step_context().step_name

    async def own_name_later(pause: float) -> str:
        await asyncio.sleep(pause)  # interleave the parallel bodies
        return step_context().step_name

    @workflow(name="context-names")
    async def caller(step: Step) -> list[str]:
        names = [await step.run("fetch", own_name) for _ in range(3)]
        names += await asyncio.gather(
            *(step.run("branch", own_name_later, pause) for pause in (0.06, 0.03, 0.0))
        )
        return names

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [caller]):
        handle = await ow.run(caller)
        assert await handle.result(timeout="10s") == [
            "fetch",
            "fetch:1",
            "fetch:2",
            "branch",
            "branch:1",
            "branch:2",
        ]


async def test_step_context_outside_a_step_body_raises_not_in_step(backend: Any) -> None:
    with pytest.raises(NotInStepError):
        step_context()
    assert issubclass(NotInStepError, RuntimeError)

    @workflow(name="context-outside")
    async def caller(step: Step) -> list[str]:
        seen = [await step.run("inside", lambda: step_context().step_name)]
        try:
            step_context()  # workflow code, right after a step body ran
            seen.append("leaked")
        except NotInStepError as error:
            seen.append(type(error).__name__)
        return seen

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [caller]):
        handle = await ow.run(caller)
        assert await handle.result(timeout="10s") == ["inside", "NotInStepError"]
