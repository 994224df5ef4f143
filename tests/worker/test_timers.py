"""Timers on an idle worker: it wakes when a parked run comes due, and idles cheaply.

An idle worker waits until the earliest of a wake-up, the next due time it
read from the backend after an empty claim, one of its passes ending, and a
poll backoff capped by a long safety poll (``openworkflow.worker.idle``).
These tests stretch the poll backoff to 30 s, so only the due time can wake
the worker in time, and count the backend calls of an idle worker.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openworkflow import OpenWorkflow, RetryPolicy, Step, workflow
from openworkflow.core.flow_control import WorkerRegistration
from openworkflow.worker import idle
from openworkflow.worker.idle import IdleWait
from tests.support.proxy import ProxyBackend
from tests.worker.helpers import new_id, running_worker, wait_idle

SAFETY_POLL_S = 30.0
"""The poll backoff and safety poll in these tests: far past every wait below."""

LONG_LEASE = "30s"
"""The wake tests' lease: an expiring lease must not be what wakes the worker.

(Their workers have two slots: with one, a slot freed ends the wait anyway.)"""

WAKE_TIMEOUT_S = 8.0
"""Generous bound for a 300 ms timer: well short of the 30 s poll, not a performance figure."""


class CallCounter(ProxyBackend):
    """Counts the worker's calls of each backend coroutine method."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.calls: dict[str, int] = {}

    def intercept(self, name: str, target: Any) -> Any:
        if not asyncio.iscoroutinefunction(target):
            return target

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return await target(*args, **kwargs)

        return counted

    def total(self) -> int:
        """All calls so far."""
        return sum(self.calls.values())


@pytest.fixture
def slow_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """No poll ends an idle wait before 30 s: only a wake-up or a due time can."""
    monkeypatch.setattr(idle, "SAFETY_POLL_S", SAFETY_POLL_S)
    monkeypatch.setattr(idle, "poll_backoff_ms", lambda _polls, cap_ms=0.0: SAFETY_POLL_S * 1000)


@workflow(name="timers-nap")
async def nap(step: Step, input: None) -> str:
    """Sleep 300 ms durably."""
    await step.sleep("nap", "300ms")
    return "rested"


_failures: dict[str, int] = {}


@workflow(name="timers-retry")
async def flaky(step: Step, input: str) -> str:
    """A step that fails once, then succeeds after a 300 ms retry backoff."""

    def body() -> str:
        _failures[input] = _failures.get(input, 0) + 1
        if _failures[input] == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    policy = RetryPolicy(initial_interval="300ms", maximum_attempts=2)
    return str(await step.run("flaky", body, retry_policy=policy))


@workflow(name="timers-elsewhere")
async def elsewhere(step: Step, input: None) -> None:
    """A workflow another (registered, absent) worker serves."""


@pytest.mark.usefixtures("slow_polls")
async def test_a_durable_sleep_wakes_at_its_due_time(backend: Any) -> None:
    counter = CallCounter(backend)
    async with running_worker(counter, [nap], lease_duration=LONG_LEASE, concurrency=2):
        handle = await OpenWorkflow(backend).run(nap, None)
        assert await handle.result(timeout=WAKE_TIMEOUT_S) == "rested"
    assert counter.calls.get("next_due_in_s", 0) >= 1


@pytest.mark.usefixtures("slow_polls")
async def test_a_retry_backoff_wakes_at_its_due_time(backend: Any) -> None:
    async with running_worker(backend, [flaky], lease_duration=LONG_LEASE, concurrency=2):
        handle = await OpenWorkflow(backend).run(flaky, new_id())
        assert await handle.result(timeout=WAKE_TIMEOUT_S) == "ok"


async def test_due_runs_it_cannot_claim_do_not_make_it_spin(backend: Any) -> None:
    # A run of a workflow another live worker serves is due, so this worker's
    # claims find nothing: the next due time must look only ahead, or the
    # worker would ask again at once, over and over.
    await backend.register_worker(
        WorkerRegistration(
            worker_id=new_id(), workflows=[("timers-elsewhere", None)], ttl_ms=60_000
        )
    )
    await OpenWorkflow(backend).run(elsewhere, None)
    counter = CallCounter(backend)
    async with running_worker(counter, [nap]) as worker:
        await asyncio.sleep(3.0)
        calls = dict(counter.calls)
        await wait_idle(worker)
    # Backing off from 100 ms, a handful of claims and next-due reads (more when
    # other tests' writes on a shared database wake it); spinning, hundreds.
    assert calls.get("claim_workflow_runs", 0) <= 100, calls
    assert calls.get("next_due_in_s", 0) <= 100, calls


class _Reader:
    """A backend answering only the next due time."""

    def __init__(self, due: float | None) -> None:
        self.due = due
        self.reads = 0

    async def next_due_in_s(self) -> float | None:
        self.reads += 1
        return self.due


async def _planned_delay(monkeypatch: pytest.MonkeyPatch, due: float | None, polls: int) -> float:
    """The delay :meth:`IdleWait.wait` sleeps for (the sleep itself recorded, not taken)."""
    delays: list[float] = []

    async def record(self: IdleWait, delay: float) -> None:
        delays.append(delay)

    monkeypatch.setattr(IdleWait, "sleep", record)
    await IdleWait(_Reader(due), None).wait(polls)
    return delays[0]


async def test_the_wait_ends_at_the_next_due_time(monkeypatch: pytest.MonkeyPatch) -> None:
    delay = await _planned_delay(monkeypatch, 0.3, 1_000)
    # Less the moment the read took: the wait ends at the due time, not 300 ms after it.
    assert 0.25 <= delay <= 0.3 + idle.DUE_MARGIN_S


async def test_with_nothing_due_the_wait_grows_to_the_safety_poll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert await _planned_delay(monkeypatch, None, 1) <= 0.1
    long_idle = await _planned_delay(monkeypatch, None, 1_000)
    assert idle.SAFETY_POLL_S / 2 <= long_idle <= idle.SAFETY_POLL_S
    far = await _planned_delay(monkeypatch, 3_600.0, 1_000)
    assert far <= idle.SAFETY_POLL_S


async def test_the_last_due_time_is_reused_until_a_pass_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    delays: list[float] = []

    async def record(self: IdleWait, delay: float) -> None:
        delays.append(delay)

    monkeypatch.setattr(IdleWait, "sleep", record)
    reader = _Reader(0.3)
    waits = IdleWait(reader, None)
    await waits.wait(1_000)
    await waits.wait(1, read_due=False)
    assert reader.reads == 1
    assert delays[1] <= 0.3 + idle.DUE_MARGIN_S
    waits.poke()  # a pass ended: it may have parked a run due sooner
    await waits.wait(1, read_due=False)
    assert reader.reads == 2


async def test_a_pass_ending_cuts_the_wait_short() -> None:
    waits = IdleWait(_Reader(None), None)
    waits.begin()
    sleeping = asyncio.create_task(waits.sleep(SAFETY_POLL_S))
    await asyncio.sleep(0)
    waits.poke()
    await asyncio.wait_for(sleeping, WAKE_TIMEOUT_S)
