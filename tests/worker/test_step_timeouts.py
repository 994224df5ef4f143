"""``step.run(..., timeout=)``: one attempt bounded in time, retried, memoized when final.

Workflows that must show the replayed behaviour park on a durable sleep after
the step under test, so the code after it runs on a later pass that replays
the step from its stored attempt instead of calling the body again.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from openworkflow import (
    OpenWorkflow,
    RetryPolicy,
    Step,
    StepTimeoutError,
    workflow,
)
from tests.worker.helpers import FAST_RETRY, get_run, list_steps, running_worker

ONE_ATTEMPT = RetryPolicy(maximum_attempts=1)
ISSUED = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)


# -- timeouts ---------------------------------------------------------------------


async def test_an_async_body_past_its_timeout_is_cancelled(backend: Any) -> None:
    cancelled: list[bool] = []

    async def slow() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "late"

    @workflow(name="async-timeout")
    async def caller(step: Step) -> str:
        try:
            return str(await step.run("slow", slow, retry_policy=ONE_ATTEMPT, timeout="100ms"))
        except StepTimeoutError as error:
            return f"{error.step_name}: {error}"

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [caller]):
        handle = await ow.run(caller)
        assert await handle.result(timeout="10s") == "slow: step 'slow' timed out after 0.1s"
    assert cancelled == [True]
    [attempt] = await list_steps(backend, handle.id)
    assert attempt.status == "failed"
    assert attempt.error["name"] == "StepTimeoutError"


async def test_a_sync_body_past_its_timeout_fails_and_its_late_result_is_discarded(
    backend: Any,
) -> None:
    release = threading.Event()
    returned = threading.Event()

    def slow() -> str:
        release.wait(10)
        returned.set()
        return "late"

    async def let_it_return() -> bool:
        release.set()
        return await asyncio.to_thread(returned.wait, 10)

    @workflow(name="sync-timeout")
    async def caller(step: Step) -> list[Any]:
        try:
            outcome = await step.run("slow", slow, retry_policy=ONE_ATTEMPT, timeout="100ms")
        except StepTimeoutError:
            outcome = "timed out"
        # The body returns while the run goes on: its result must not be stored.
        late_returned = await step.run("let-it-return", let_it_return)
        await step.sleep("nap", "10ms")
        return [outcome, late_returned]

    ow = OpenWorkflow(backend)
    try:
        async with running_worker(backend, [caller]):
            handle = await ow.run(caller)
            assert await handle.result(timeout="10s") == ["timed out", True]
    finally:
        release.set()
    slow_attempts = [a for a in await list_steps(backend, handle.id) if a.step_name == "slow"]
    assert [(a.status, a.output) for a in slow_attempts] == [("failed", None)]
    assert slow_attempts[0].error["name"] == "StepTimeoutError"


@pytest.mark.parametrize("body_kind", ["async", "sync"])
async def test_a_timed_out_attempt_is_retried_by_the_policy(backend: Any, body_kind: str) -> None:
    calls: list[int] = []
    release = threading.Event()

    def sync_body() -> str:
        calls.append(1)
        if len(calls) < 3:
            release.wait(10)  # the first two attempts hang; the third answers at once
        return f"answered on attempt {len(calls)}"

    async def async_body() -> str:
        calls.append(1)
        if len(calls) < 3:
            await asyncio.sleep(30)
        return f"answered on attempt {len(calls)}"

    body = async_body if body_kind == "async" else sync_body

    @workflow(name="timeout-retried")
    async def caller(step: Step) -> str:
        return str(await step.run("fetch", body, retry_policy=FAST_RETRY, timeout="300ms"))

    ow = OpenWorkflow(backend)
    try:
        async with running_worker(backend, [caller]):
            handle = await ow.run(caller)
            assert await handle.result(timeout="10s") == "answered on attempt 3"
    finally:
        release.set()
    attempts = await list_steps(backend, handle.id)
    assert [a.status for a in attempts] == ["failed", "failed", "completed"]
    assert [a.error["name"] for a in attempts[:2]] == ["StepTimeoutError", "StepTimeoutError"]


@pytest.mark.parametrize("caught", [StepTimeoutError, TimeoutError], ids=lambda c: c.__name__)
async def test_the_final_timeout_is_caught_the_same_on_every_replay(
    backend: Any, caught: type[Exception]
) -> None:
    calls: list[int] = []
    seen: list[tuple[str, str]] = []

    async def hangs() -> str:
        calls.append(1)
        await asyncio.sleep(30)
        return "never"

    @workflow(name="final-timeout")
    async def caller(step: Step) -> int:
        try:
            await step.run("hangs", hangs, retry_policy=FAST_RETRY, timeout="50ms")
        except caught as error:
            seen.append((type(error).__name__, str(error)))
        for index in range(2):  # each sleep ends a pass: the failure is replayed twice
            await step.sleep(f"nap-{index}", "10ms")
        return len(seen)

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [caller]):
        handle = await ow.run(caller)
        assert await handle.result(timeout="10s") == 3
    assert seen == [("StepTimeoutError", "step 'hangs' timed out after 0.05s")] * 3
    assert len(calls) == 3, "three attempts, then the failure is final and never run again"


@pytest.mark.parametrize("on_cancel", ["returns", "raises"])
async def test_a_body_that_resists_its_cancellation_still_times_out(
    backend: Any, on_cancel: str
) -> None:
    async def stubborn() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            if on_cancel == "returns":
                return "too late"  # swallows the cancellation
            raise RuntimeError("cleanup failed") from None
        return "never"

    @workflow(name="stubborn")
    async def caller(step: Step) -> str:
        try:
            return str(await step.run("stubborn", stubborn, retry_policy=ONE_ATTEMPT, timeout=0.1))
        except StepTimeoutError as error:
            return str(error)

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [caller]):
        handle = await ow.run(caller)
        assert await handle.result(timeout="10s") == "step 'stubborn' timed out after 0.1s"
    [attempt] = await list_steps(backend, handle.id)
    assert (attempt.status, attempt.output) == ("failed", None)


@pytest.mark.parametrize("timeout", [None, "5s"], ids=["pool-thread", "own-thread"])
async def test_a_sync_body_raising_stop_iteration_fails_instead_of_hanging(
    backend: Any, timeout: str | None
) -> None:
    def exhausted() -> str:
        return next(iter([]))  # raises StopIteration, which a future cannot carry

    @workflow(name="stop-iteration")
    async def caller(step: Step) -> str:
        try:
            await step.run("next", exhausted, retry_policy=ONE_ATTEMPT, timeout=timeout)
        except RuntimeError as error:
            return str(error)
        return "returned"

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [caller]):
        handle = await ow.run(caller)
        assert await handle.result(timeout="10s") == (
            "step body raised StopIteration: StopIteration()"
        )


async def test_an_uncaught_final_timeout_fails_the_run(backend: Any) -> None:
    @workflow(name="uncaught-timeout")
    async def caller(step: Step) -> None:
        await step.run("hangs", asyncio.sleep, 30, retry_policy=ONE_ATTEMPT, timeout=0.05)

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [caller]):
        handle = await ow.run(caller)
        with pytest.raises(Exception, match=r"timed out after 0\.05s"):
            await handle.result(timeout="10s")
    run = await get_run(backend, handle.id)
    assert run.status == "failed"
    assert run.error is not None and run.error["name"] == "StepTimeoutError"


@pytest.mark.parametrize(
    ("timeout", "expected"),
    [
        (0, "ValueError: step 'charge': timeout must be positive"),
        (-1, "ValueError: step 'charge': timeout must be positive"),
        ("0ms", "ValueError: step 'charge': timeout must be positive"),
        ("soon", "TypeError: step 'charge': invalid timeout 'soon'"),
        (True, "TypeError: step 'charge': invalid timeout True"),
        ([5], "TypeError: step 'charge': invalid timeout [5]"),
        (float("nan"), "TypeError: step 'charge': invalid timeout nan"),
        (float("inf"), "TypeError: step 'charge': invalid timeout inf"),
        (1e308, "ValueError: step 'charge': timeout must be at most 100 years"),
        ("999999y", "ValueError: step 'charge': timeout must be at most 100 years"),
    ],
)
async def test_an_invalid_timeout_is_refused_at_the_call(
    backend: Any, timeout: Any, expected: str
) -> None:
    calls: list[int] = []

    @workflow(name="bad-timeout")
    async def caller(step: Step) -> str:
        try:
            await step.run("charge", calls.append, 1, timeout=timeout)
        except (TypeError, ValueError) as error:
            return f"{type(error).__name__}: {error}"
        return "accepted"

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [caller]):
        handle = await ow.run(caller)
        assert (await handle.result(timeout="10s")).startswith(expected)
    assert calls == [], "the body never runs"
