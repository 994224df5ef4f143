"""Timers on an idle worker: durable sleeps, retry backoffs and delayed starts resume when due.

An idle worker waits until a wake-up, the next due time it knows (its own
parked runs, or a backend read after an empty claim) or a long safety poll
(``openworkflow.worker.idle``). These tests stretch the poll to a minute, so
only a due time can wake the worker in time, and check behaviour with a
generous bound: each timer must resume within :data:`WAKE_TIMEOUT_S`, far
short of the poll, not within a performance figure.

The first attempt at this (reverted) read the next due time from the
database after each empty claim, looking only ahead: a run that came due
between the claim and the read was invisible to both, and the worker slept
until the poll. :class:`SlowDueReads` widens that window to make the race
certain; :class:`NoDueReads` checks that a worker's own timers need no read.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from openworkflow import OpenWorkflow, RetryPolicy, Schedule, Step, workflow
from tests.support.proxy import ProxyBackend
from tests.worker.helpers import new_id, now, running_worker, wait_for_parked

WAKE_TIMEOUT_S = 5.0
"""Generous bound for a timer of at most 300 ms: well short of the poll, not a figure."""

REPEATS = 6
"""Timers per test, one after another: a race that loses one timer in a few is caught."""


class SlowDueReads(ProxyBackend):
    """The worker's reads of the next due time start 400 ms late (a busy database).

    Any timer due within that window falls between the claim before the read
    and the read itself.
    """

    async def next_due_in_s(self, looked_back_s: float) -> float | None:
        await asyncio.sleep(0.4)
        due: float | None = await self.inner.next_due_in_s(looked_back_s + 0.4)
        return due


class NoDueReads(ProxyBackend):
    """The backend never knows of a due time: the worker has only what it parked itself."""

    async def next_due_in_s(self, looked_back_s: float) -> float | None:
        return None


@workflow(name="timers-nap")
async def nap(step: Step, input: int) -> str:
    """Sleep ``input`` ms durably."""
    await step.sleep("nap", f"{input}ms")
    return "rested"


_failures: dict[str, int] = {}


@workflow(name="timers-retry")
async def flaky(step: Step, input: str) -> str:
    """A step that fails once, then succeeds after a 200 ms retry backoff."""

    def body() -> str:
        _failures[input] = _failures.get(input, 0) + 1
        if _failures[input] == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    policy = RetryPolicy(initial_interval="200ms", maximum_attempts=2)
    return str(await step.run("flaky", body, retry_policy=policy))


@workflow(name="timers-start")
async def started(step: Step, input: None) -> str:
    """Nothing but a start."""
    return "started"


@workflow(name="timers-minutely", schedule=Schedule("* * * * *"))
async def minutely(step: Step, input: None) -> str:
    """A schedule tick's run."""
    return "ticked"


async def _sleeps_resume(worker_backend: Any, client_backend: Any) -> None:
    client = OpenWorkflow(client_backend)
    async with running_worker(worker_backend, [nap], concurrency=2):
        for number in range(REPEATS):
            handle = await client.run(nap, 100 + 40 * number)
            assert await handle.result(timeout=WAKE_TIMEOUT_S) == "rested"


@pytest.mark.usefixtures("slow_polls")
async def test_durable_sleeps_resume_on_time(backend: Any) -> None:
    await _sleeps_resume(backend, backend)


@pytest.mark.usefixtures("slow_polls")
async def test_durable_sleeps_resume_when_due_reads_are_slow(backend: Any) -> None:
    await _sleeps_resume(SlowDueReads(backend), backend)


@pytest.mark.usefixtures("slow_polls")
async def test_a_worker_needs_no_read_for_the_runs_it_parked(backend: Any) -> None:
    await _sleeps_resume(NoDueReads(backend), backend)


@pytest.mark.usefixtures("slow_polls")
@pytest.mark.parametrize("proxy", [SlowDueReads, NoDueReads])
async def test_retry_backoffs_resume_on_time(backend: Any, proxy: type[ProxyBackend]) -> None:
    client = OpenWorkflow(backend)
    async with running_worker(proxy(backend), [flaky], concurrency=2):
        for _ in range(REPEATS):
            handle = await client.run(flaky, new_id())
            assert await handle.result(timeout=WAKE_TIMEOUT_S) == "ok"


@pytest.mark.usefixtures("slow_polls")
async def test_delayed_starts_begin_on_time(backend: Any) -> None:
    # Another client's run, due later: its notification says only "something
    # changed", so the worker learns when it is due by reading.
    async with running_worker(backend, [started], concurrency=2):
        await asyncio.sleep(0.2)  # the worker is waiting now
        client = OpenWorkflow(backend)
        for number in range(REPEATS):
            due = now() + timedelta(milliseconds=100 + 40 * number)
            handle = await client.run(started, None, available_at=due)
            assert await handle.result(timeout=WAKE_TIMEOUT_S) == "started"


@pytest.mark.usefixtures("slow_polls")
async def test_a_worker_resumes_a_run_another_worker_parked(backend: Any) -> None:
    client = OpenWorkflow(backend)
    async with running_worker(backend, [nap]):
        handle = await client.run(nap, 1_500)
        await wait_for_parked(backend, handle.id)
    # The worker that parked the run is gone; a new one learns of it by reading.
    async with running_worker(backend, [nap]):
        assert await handle.result(timeout=WAKE_TIMEOUT_S) == "rested"


@pytest.mark.usefixtures("slow_polls")
async def test_a_schedule_tick_starts_its_run_without_a_poll(backend: Any, clock: Any) -> None:
    async with running_worker(backend, [minutely]):
        await asyncio.sleep(0.2)
        moment = now()
        boundary = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
        clock.advance(boundary - moment + timedelta(milliseconds=100))
        client = OpenWorkflow(backend)

        async def ticked() -> bool:
            runs = await client.list_runs(workflow_name="timers-minutely")
            return any(run.status == "completed" for run in runs.data)

        for _ in range(int(WAKE_TIMEOUT_S * 20)):
            if await ticked():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the schedule tick's run did not start")
