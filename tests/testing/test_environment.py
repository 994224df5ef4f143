"""``WorkflowEnvironment``: workflows that sleep, retry and time out, tested in milliseconds.

Every test checks the engine's clock moved (``env.now()``) and that the
workflow's outcome is the one real time would give; none measures real time
(the speed itself is a benchmark matter), but a wait that did not skip would
run into the environment's one-minute real-time guard and fail.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from openworkflow import RetryPolicy, Step, workflow
from openworkflow.core import clock
from openworkflow.errors import (
    ChildWorkflowTimeoutError,
    ResultTimeoutError,
    StepTimeoutError,
    WorkflowFailedError,
)
from openworkflow.testing.environment import WorkflowEnvironment

FAILURES: dict[str, int] = {}


@workflow(name="env-month-sleep")
async def month_sleep(step: Step) -> str:
    await step.sleep("month", "30d")
    return "awake"


def flaky_call(name: str) -> str:
    FAILURES[name] = FAILURES.get(name, 0) + 1
    if FAILURES[name] < 3:
        raise ConnectionError(f"{name} is down")
    return f"{name} is up"


@workflow(name="env-retries")
async def hourly_retries(input: str, step: Step) -> str:
    policy = RetryPolicy(initial_interval="1h", maximum_interval="1h", maximum_attempts=5)
    return str(await step.run("call", flaky_call, input, retry_policy=policy))


@workflow(name="env-signal-or-timeout")
async def signal_or_timeout(step: Step) -> Any:
    answer = await step.wait_for_signal("approve", timeout="7d")
    return "timed out" if answer is None else answer["data"]


@workflow(name="env-slow-child")
async def slow_child(step: Step) -> str:
    await step.sleep("long", "30d")
    return "child done"


@workflow(name="env-impatient-parent")
async def impatient_parent(step: Step) -> str:
    try:
        return str(await step.run_workflow(slow_child, timeout="1d"))
    except ChildWorkflowTimeoutError:
        return "gave up on the child"


async def _hang_forever() -> None:
    await asyncio.Event().wait()


@workflow(name="env-step-timeout")
async def step_timeout(step: Step) -> str:
    policy = RetryPolicy(maximum_attempts=1)
    try:
        await step.run("hang", _hang_forever, timeout="1h", retry_policy=policy)
    except StepTimeoutError:
        return "timed out"
    return "finished"


@workflow(name="env-every-hour", schedule="0 * * * *")
async def every_hour(step: Step) -> str:
    return "tick"


@workflow(name="env-continue")
async def continue_daily(input: int, step: Step) -> int:
    await step.sleep("day", "1d")
    if input < 3:
        await step.continue_as_new(input + 1)
    return input


async def _wait_until_parked(env: WorkflowEnvironment, run_id: str) -> None:
    for _ in range(2000):
        run = await env.client.get_run(run_id)
        if run is not None and run.worker_id is None and run.status == "running":
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"run {run_id} never parked")


async def test_a_month_long_sleep_completes_and_the_clock_moved() -> None:
    async with WorkflowEnvironment([month_sleep]) as env:
        started = env.now()
        assert await env.run(month_sleep) == "awake"
        assert env.now() - started >= timedelta(days=30)
        assert env.now() - started < timedelta(days=31)


async def test_retry_backoffs_are_skipped() -> None:
    async with WorkflowEnvironment([hourly_retries]) as env:
        started = env.now()
        assert await env.run(hourly_retries, "billing") == "billing is up"
        assert FAILURES["billing"] == 3
        assert timedelta(hours=2) <= env.now() - started < timedelta(hours=3)


async def test_a_signal_wait_times_out_when_no_signal_comes() -> None:
    async with WorkflowEnvironment([signal_or_timeout]) as env:
        started = env.now()
        assert await env.run(signal_or_timeout) == "timed out"
        assert env.now() - started >= timedelta(days=7)


async def test_time_does_not_skip_while_the_test_is_not_waiting() -> None:
    async with WorkflowEnvironment([signal_or_timeout]) as env:
        handle = await env.start(signal_or_timeout)
        await _wait_until_parked(env, handle.id)
        await asyncio.sleep(0.05)  # not waiting through env: the 7-day timeout stays ahead
        await handle.signal("approve", {"by": "ana"})
        assert await env.result(handle) == {"by": "ana"}
        assert env.now() - handle.workflow_run.created_at < timedelta(days=7)  # type: ignore[union-attr]


async def test_a_child_timeout_is_skipped_to() -> None:
    async with WorkflowEnvironment([impatient_parent, slow_child]) as env:
        started = env.now()
        assert await env.run(impatient_parent) == "gave up on the child"
        assert timedelta(days=1) <= env.now() - started < timedelta(days=30)


async def test_a_run_deadline_fails_the_run_when_time_reaches_it() -> None:
    async with WorkflowEnvironment([month_sleep]) as env:
        started = env.now()
        with pytest.raises(WorkflowFailedError, match="deadline"):
            await env.run(month_sleep, deadline_at="2h")
        assert timedelta(hours=2) <= env.now() - started < timedelta(days=30)


async def test_a_step_timeout_fires_when_time_is_advanced_by_hand() -> None:
    # A running step holds the clock (as in Temporal's test server, time never
    # skips while a step runs): the test moves it past the timeout itself.
    async with WorkflowEnvironment([step_timeout]) as env:
        handle = await env.start(step_timeout)
        for _ in range(2000):
            if env.worker.active_run_ids:
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # the step is hanging now
        await env.advance("1h")
        assert await env.result(handle) == "timed out"


async def test_advance_by_hand_without_time_skipping() -> None:
    async with WorkflowEnvironment([month_sleep], time_skipping=False) as env:
        handle = await env.start(month_sleep)
        await _wait_until_parked(env, handle.id)
        with pytest.raises(ResultTimeoutError):
            await env.result(handle, timeout="100ms")  # no skipping: the sleep goes on
        await env.advance("30d")
        assert await env.result(handle) == "awake"


async def test_schedules_tick_as_the_clock_moves() -> None:
    async with WorkflowEnvironment([every_hour]) as env:
        await env.advance("3h")
        runs = (await env.client.list_runs(workflow_name="env-every-hour")).data
        assert len(runs) >= 1
        assert await env.result(runs[0].id) == "tick"
        await env.advance("1h")
        later = (await env.client.list_runs(workflow_name="env-every-hour")).data
        assert len(later) == len(runs) + 1
        scheduled = sorted(run.scheduled_at for run in later if run.scheduled_at is not None)
        assert scheduled[-1] - scheduled[-2] == timedelta(hours=1)


async def test_continue_as_new_is_followed_to_the_last_run() -> None:
    async with WorkflowEnvironment([continue_daily]) as env:
        started = env.now()
        assert await env.run(continue_daily, 0) == 3
        assert env.now() - started >= timedelta(days=4)


async def test_the_clock_and_the_loop_get_real_time_back_on_exit() -> None:
    loop = asyncio.get_running_loop()
    async with WorkflowEnvironment([month_sleep]) as env:
        await env.advance("1d")
        assert clock.offset() is not None and clock.offset() >= timedelta(days=1)
        with pytest.raises(RuntimeError, match="one environment at a time"):
            async with WorkflowEnvironment([month_sleep]):
                pass
    assert clock.offset() is None
    assert "time" not in vars(loop)
    assert abs(clock.now() - clock.truncate_ms(clock.now())) < timedelta(seconds=1)


async def test_a_backend_passed_in_is_used_and_left_open(backend: Any, backend_kind: str) -> None:
    if backend_kind != "postgres":  # SQLite reads the engine's clock: time skips
        async with WorkflowEnvironment([month_sleep], backend=backend) as env:
            assert await env.run(month_sleep) == "awake"
        assert await backend.count_workflow_runs()  # still open
        return
    # PostgreSQL reads its own NOW(): no time skipping, no advance.
    with pytest.raises(ValueError, match="time_skipping=False"):
        WorkflowEnvironment([month_sleep], backend=backend)
    async with WorkflowEnvironment([hourly_retries], backend=backend, time_skipping=False) as env:
        with pytest.raises(RuntimeError, match="cannot be moved"):
            await env.advance("1h")
        assert clock.offset() is None
        FAILURES["pg"] = 2  # succeeds at once: no backoff to wait for
        assert await env.run(hourly_retries, "pg") == "pg is up"
    assert (await backend.count_workflow_runs()).completed == 1
