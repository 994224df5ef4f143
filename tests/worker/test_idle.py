"""An idle worker's wait: no due time or wake-up lost to a race, and a cheap SQLite watcher.

The races (``openworkflow.worker.idle``): a pass of this worker that ends
while a claim runs, with its run due before that claim began (the claim did
not see the write; the instant looks covered by it); a wake-up sent while a
claim runs (no waiter at that moment). Both must end the wait after the
claim at once, not at the poll. End to end: a sleep parked by another worker
that then goes away is resumed by a worker idle all along; many timers at
once all resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from openworkflow import OpenWorkflow, Step, workflow
from openworkflow.core.next_due import DueTimes
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.notifications import ChangeNotifier
from openworkflow.sqlite import watcher
from openworkflow.worker.idle import IdleWait
from tests.fixtures.backends import _open_backend
from tests.support.waiting import wait_until
from tests.worker.helpers import get_run, new_id, now, running_worker, wait_for_parked

WAKE_TIMEOUT_S = 2.0
"""Generous bound for a wait that a race must not stretch to the poll."""


_gate = threading.Event()


@workflow(name="idle-blocked")
async def blocked(step: Step, input: None) -> str:
    """Hold the worker's slot until the test opens the gate."""
    await step.run("wait", lambda: _gate.wait(10))
    return "unblocked"


@workflow(name="idle-nap")
async def nap(step: Step, input: int) -> str:
    """Sleep ``input`` ms durably."""
    await step.sleep("nap", f"{input}ms")
    return "rested"


async def _parked_run(backend: Any, due_in_ms: float) -> WorkflowRun:
    """A run as a park write leaves it: running, no owner, due ``due_in_ms`` from now."""
    handle = await OpenWorkflow(backend).run("idle-elsewhere", None)
    run = await get_run(backend, handle.id)
    due = now() + timedelta(milliseconds=due_in_ms)
    return dataclasses.replace(run, status="running", worker_id=None, available_at=due)


@pytest.mark.usefixtures("slow_polls")
async def test_a_pass_ending_during_a_claim_with_its_run_due_already_ends_the_wait(
    backend: Any,
) -> None:
    # The run came due before the claim began, but its park committed after the
    # claim's snapshot: the worker must claim again, not sleep till the poll.
    run = await _parked_run(backend, -50)
    waiting = IdleWait(object(), None)  # no reader: nothing but the pass can end the wait
    waiting.begin()
    waiting.pass_ended(run.id, run, started=True)
    started = time.monotonic()
    await asyncio.wait_for(waiting.wait(1), WAKE_TIMEOUT_S)
    assert time.monotonic() - started < WAKE_TIMEOUT_S
    await waiting.stop()


@pytest.mark.usefixtures("slow_polls")
async def test_a_pass_ending_during_a_claim_due_later_is_waited_for(backend: Any) -> None:
    run = await _parked_run(backend, 200)
    waiting = IdleWait(object(), None)
    waiting.begin()
    waiting.pass_ended(run.id, run, started=True)
    started = time.monotonic()
    await asyncio.wait_for(waiting.wait(1), WAKE_TIMEOUT_S)
    assert 0.15 <= time.monotonic() - started < WAKE_TIMEOUT_S
    await waiting.stop()


@pytest.mark.usefixtures("slow_polls")
async def test_a_wake_up_sent_during_a_claim_ends_the_wait_after_it() -> None:
    notifier = ChangeNotifier()
    waiting = IdleWait(object(), notifier)
    waiting.begin()
    notifier.notify_work_available()  # a run committed while the claim ran
    started = time.monotonic()
    await asyncio.wait_for(waiting.wait(1), WAKE_TIMEOUT_S)
    assert time.monotonic() - started < WAKE_TIMEOUT_S
    await waiting.stop()


class CountedReads:
    """A backend that knows of no due time, counting the times it is asked."""

    def __init__(self) -> None:
        self.reads = 0

    async def next_due_in_s(self, looked_back_s: float) -> float | None:
        self.reads += 1
        return None


async def _wait_briefly(waiting: IdleWait) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(waiting.wait(1), 0.3)


@pytest.mark.usefixtures("slow_polls")
async def test_a_worker_that_was_busy_reads_the_next_due_time_once_free() -> None:
    # Busy, it heard no wake-up: another worker may have parked a run due later.
    reader, notifier = CountedReads(), ChangeNotifier()
    waiting = IdleWait(reader, notifier)
    waiting.begin()
    await _wait_briefly(waiting)  # the first wait reads
    waiting.begin()
    await _wait_briefly(waiting)  # nothing happened: no read
    assert reader.reads == 1
    waiting.begin()
    waiting.busy()
    waiting.begin()  # a slot freed
    await _wait_briefly(waiting)
    assert reader.reads == 2
    await waiting.stop()


@pytest.mark.usefixtures("slow_polls")
async def test_a_busy_worker_does_not_watch_for_work() -> None:
    notifier = ChangeNotifier()
    waiting = IdleWait(object(), notifier)
    waiting.begin()
    assert notifier.has_work_waiters
    waiting.busy()  # every slot taken: SQLite's watcher need not read for it
    assert not notifier.has_work_waiters
    await waiting.stop()


@pytest.mark.usefixtures("slow_polls")
async def test_a_sleep_another_worker_parked_while_this_one_was_busy_resumes_on_time(
    backend: Any, backend_kind: str, tmp_path: Path
) -> None:
    # Another process's worker parks a sleep and goes away while this worker's
    # one slot is taken (it heard no wake-up meanwhile). Once free, this worker
    # must learn the sleep's due time by reading: no poll comes within a minute.
    if backend_kind == "sqlite_memory":
        pytest.skip("another process cannot open an in-memory database")
    other = _open_backend(backend_kind, tmp_path, backend.namespace_id)
    _gate.clear()
    try:
        async with running_worker(backend, [nap, blocked], concurrency=1) as worker:
            client = OpenWorkflow(backend)
            blocker = await client.run(blocked, None)
            await wait_until(lambda: blocker.id in worker.active_run_ids)
            async with running_worker(other, [nap], lease_duration="30s"):
                handle = await OpenWorkflow(other).run(nap, 1_500)
                await wait_for_parked(other, handle.id)
            _gate.set()
            assert await blocker.result(timeout=WAKE_TIMEOUT_S) == "unblocked"
            assert await client.handle(handle.id).result(timeout=WAKE_TIMEOUT_S + 1.5) == "rested"
    finally:
        _gate.set()
        await other.stop()


@pytest.mark.usefixtures("slow_polls")
async def test_many_timers_at_once_all_resume(backend: Any) -> None:
    # Wake-ups and due times crowd: none may be lost to another.
    client = OpenWorkflow(backend)
    async with running_worker(backend, [nap], concurrency=3):
        handles = [await client.run(nap, random.randint(20, 400)) for _ in range(30)]
        for handle in handles:
            assert await handle.result(timeout=15) == "rested"


def _watcher_interval(notifier: ChangeNotifier, quiet_for: float, interval: float) -> float:
    watching = watcher.DataVersionWatcher(":memory:", notifier)
    return watching._next_interval(interval, quiet_for)


async def test_the_sqlite_watcher_reads_rarely_for_an_idle_worker_only() -> None:
    notifier = ChangeNotifier()
    work = notifier.watch_work()
    # Just after a change: at once, then less and less often.
    assert _watcher_interval(notifier, 0.0, 0.1) == watcher.POLL_INTERVAL_S
    interval = watcher.POLL_INTERVAL_S
    for _ in range(20):
        interval = _watcher_interval(notifier, 5.0, interval)
    assert interval == watcher.IDLE_POLL_INTERVAL_S
    # A result() waiting is served at once.
    run_id = new_id()
    run_waiter = notifier.watch_run(run_id)
    assert _watcher_interval(notifier, 5.0, interval) == watcher.POLL_INTERVAL_S
    notifier.unwatch_run(run_id, run_waiter)
    notifier.unwatch_work(work)


def test_past_their_limit_known_due_times_end_in_a_read() -> None:
    due = DueTimes(limit=10)
    start = now()
    for number in range(11):
        due.add(start + timedelta(seconds=number), f"run-{number}")
    assert len(due) == 6  # the 5 earliest and an unnamed instant at the last of them
    passed = due.pop_through(start + timedelta(seconds=100))
    assert passed == ["run-0", "run-1", "run-2", "run-3", "run-4", None]


async def test_the_backend_reports_the_next_due_time_looking_back_to_the_claim(
    backend: Any,
) -> None:
    client = OpenWorkflow(backend)
    assert await backend.next_due_in_s(0.0) is None
    await client.run("idle-later", None, available_at=now() + timedelta(seconds=30))
    due = await backend.next_due_in_s(0.0)
    assert due is not None and 25 < due <= 30
    await client.run("idle-past", None, available_at=now() - timedelta(milliseconds=500))
    # Due 0.5 s ago: within a 5 s look-back it is reported (as due already), not before.
    looked_back = await backend.next_due_in_s(5.0)
    assert looked_back is not None and -5 < looked_back <= 0
    assert (await backend.next_due_in_s(0.0) or 0) > 25


_nap_gate = threading.Event()


@workflow(name="idle-gated-nap")
async def gated_nap(step: Step, input: int) -> str:
    """Wait for the test's gate in a step, then sleep ``input`` ms durably."""
    await step.run("gate", lambda: _nap_gate.wait(10))
    await step.sleep("nap", f"{input}ms")
    return "rested"


@pytest.mark.usefixtures("slow_polls")
async def test_an_idle_worker_resumes_a_sleep_a_busy_worker_parked(
    backend: Any, backend_kind: str, tmp_path: Path
) -> None:
    # Another process's worker parks a sleep, then stays busy with other work.
    # This worker, idle all along (no poll within a minute), must hear of the
    # park (a "due later" notification) and resume the sleep on time.
    if backend_kind == "sqlite_memory":
        pytest.skip("another process cannot open an in-memory database")
    other = _open_backend(backend_kind, tmp_path, backend.namespace_id)
    _gate.clear()
    _nap_gate.clear()
    try:
        # Long leases: no lease end comes due (and sends this worker reading) meanwhile.
        options: dict[str, Any] = {"concurrency": 1, "lease_duration": "30s"}
        async with running_worker(other, [gated_nap, blocked], **options) as busy:
            handle = await OpenWorkflow(other).run(gated_nap, 300)
            await wait_until(lambda: handle.id in busy.active_run_ids)
            async with running_worker(backend, [gated_nap], lease_duration="30s"):
                await asyncio.sleep(0.3)  # idle now: it has claimed and read once
                blocker = await OpenWorkflow(other).run(blocked, None)
                await asyncio.sleep(0.3)  # its wake-up (a claim, a read) is over
                _nap_gate.set()  # the nap parks; the busy worker takes the blocker
                parked = await wait_for_parked(backend, handle.id)
                assert parked.available_at is not None
                await wait_until(lambda: blocker.id in busy.active_run_ids)
                client = OpenWorkflow(backend)
                assert await client.handle(handle.id).result(timeout=WAKE_TIMEOUT_S) == "rested"
            _gate.set()
            assert await blocker.result(timeout=WAKE_TIMEOUT_S) == "unblocked"
    finally:
        _gate.set()
        _nap_gate.set()
        await other.stop()
