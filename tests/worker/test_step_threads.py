"""StepThreads: the threads sync step bodies run in (``openworkflow/worker/step_threads.py``).

Unit tests of the pool's promises (a queued body never waits behind a running
one, context handed over, cancelled-before-start bodies never run, shutdown,
errors with their traceback, thread names), then end to end: a worker's sync
steps run in it on every backend, and a slow sync step does not hold up the
others.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
import traceback
from typing import Any

import pytest

from openworkflow import OpenWorkflow, Step, workflow
from openworkflow.worker.step_threads import StepThreads, step_thread_pool
from tests.worker.helpers import FAST_RETRY, running_worker

PREFIX = "openworkflow-step"
REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("REQUEST", default="unset")


async def test_a_queued_body_does_not_wait_behind_a_slow_one() -> None:
    pool = StepThreads(8, PREFIX)
    release = threading.Event()
    try:
        # One thread is awake for the first body: it takes the slow one, and the
        # quick ones queued right behind it must get threads of their own.
        slow = pool.start(release.wait, 2.0)
        started = time.perf_counter()
        quick = await asyncio.gather(*(pool.start(lambda i=i: i) for i in range(5)))
        elapsed = time.perf_counter() - started
        assert quick == [0, 1, 2, 3, 4]
        assert not slow.done()
        assert elapsed < 0.5, f"quick bodies waited {elapsed:.2f} s behind the slow one"
    finally:
        release.set()
        pool.shutdown(wait=True)


async def test_bodies_started_later_do_not_wait_behind_slow_ones_either() -> None:
    pool = StepThreads(8, PREFIX)
    release = threading.Event()
    try:
        slow = [pool.start(release.wait, 2.0) for _ in range(3)]
        await asyncio.sleep(0.05)  # the slow bodies hold their threads
        started = time.perf_counter()
        assert await pool.start(lambda: "quick") == "quick"
        assert time.perf_counter() - started < 0.5
        assert not any(future.done() for future in slow)
    finally:
        release.set()
        pool.shutdown(wait=True)


async def test_many_bodies_get_their_own_results() -> None:
    pool = StepThreads(4, PREFIX)
    try:
        results = await asyncio.gather(*(pool.start(lambda i=i: i * i) for i in range(500)))
        assert results == [i * i for i in range(500)]
    finally:
        pool.shutdown(wait=True)


async def test_the_context_handed_over_is_the_bodys() -> None:
    pool = StepThreads(2, PREFIX)
    try:
        token = REQUEST.set("request-1")
        try:
            context = contextvars.copy_context()
        finally:
            REQUEST.reset(token)
        assert await pool.start(context.run, REQUEST.get) == "request-1"
        assert REQUEST.get() == "unset"
    finally:
        pool.shutdown(wait=True)


async def test_a_body_cancelled_before_it_started_never_runs() -> None:
    pool = StepThreads(1, PREFIX)  # one thread: the second body queues behind the first
    release = threading.Event()
    ran: list[str] = []
    try:
        first = pool.start(release.wait, 2.0)
        second = pool.start(ran.append, "second")
        await asyncio.sleep(0.05)
        second.cancel()
        release.set()
        assert await first is True
        await asyncio.sleep(0.1)  # the thread is free again: it would have run it by now
        assert ran == []
        assert await pool.start(ran.append, "third") is None
        assert ran == ["third"]
    finally:
        release.set()
        pool.shutdown(wait=True)


async def test_an_error_reaches_the_awaiting_task_with_its_traceback() -> None:
    def failing_body() -> None:
        raise ValueError("boom")

    pool = StepThreads(2, PREFIX)
    try:
        with pytest.raises(ValueError, match="boom") as raised:
            await pool.start(failing_body)
        frames = [frame.name for frame in traceback.extract_tb(raised.value.__traceback__)]
        assert "failing_body" in frames
    finally:
        pool.shutdown(wait=True)


async def test_threads_are_named_by_the_prefix() -> None:
    pool = StepThreads(2, PREFIX)
    try:
        name = await pool.start(lambda: threading.current_thread().name)
        assert name.startswith(f"{PREFIX}_")
    finally:
        pool.shutdown(wait=True)


async def test_shutdown_stops_the_threads_and_refuses_new_bodies() -> None:
    pool = StepThreads(3, PREFIX)
    await asyncio.gather(*(pool.start(time.sleep, 0.01) for _ in range(3)))
    threads = [t for t in threading.enumerate() if t.name.startswith(f"{PREFIX}_")]
    assert threads
    pool.shutdown(wait=True)
    assert not any(thread.is_alive() for thread in threads)
    with pytest.raises(RuntimeError):
        pool.start(lambda: None)
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


async def test_shutdown_with_cancel_futures_drops_queued_bodies() -> None:
    pool = StepThreads(1, PREFIX)
    release = threading.Event()
    ran: list[str] = []
    running = pool.start(release.wait, 2.0)
    queued = pool.start(ran.append, "queued")
    await asyncio.sleep(0.05)
    pool.shutdown(wait=False, cancel_futures=True)
    release.set()
    assert await running is True
    with pytest.raises(asyncio.CancelledError):
        await queued
    await asyncio.sleep(0.05)
    assert ran == []
    pool.shutdown(wait=True)


async def test_the_executor_interface_works_with_run_in_executor() -> None:
    pool = StepThreads(2, PREFIX)
    try:
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(pool, pow, 2, 10) == 1024
        assert pool.submit(lambda a, b=0: a + b, 1, b=2).result(timeout=5) == 3
    finally:
        pool.shutdown(wait=True)


def test_the_worker_pool_is_step_threads() -> None:
    pool = step_thread_pool(4, PREFIX)
    try:
        assert isinstance(pool, StepThreads)
    finally:
        pool.shutdown(wait=True)


# -- end to end ------------------------------------------------------------------------


def _slow_body() -> str:
    time.sleep(2.0)
    return "slow"


def _where() -> dict[str, str]:
    return {"thread": threading.current_thread().name, "request": REQUEST.get()}


@workflow(name="step-threads-slow")
async def slow_workflow(step: Step, input: Any) -> str:
    """One sync step that takes 2 s."""
    return str(await step.run("slow", _slow_body))


@workflow(name="step-threads-quick")
async def quick_workflow(step: Step, input: Any) -> dict[str, str]:
    """A sync step that reports its thread and a context variable set by the workflow."""
    REQUEST.set(f"run-{input}")
    return dict(await step.run("where", _where))


async def test_a_slow_sync_step_does_not_hold_up_other_runs(backend: Any) -> None:
    client = OpenWorkflow(backend)
    async with running_worker(backend, [slow_workflow, quick_workflow], concurrency=10):
        slow = await client.run(slow_workflow, None)
        await asyncio.sleep(0.2)  # the slow body is running
        started = time.perf_counter()
        handles = [await client.run(quick_workflow, index) for index in range(5)]
        results = [await handle.result(timeout="10s") for handle in handles]
        elapsed = time.perf_counter() - started
        assert await slow.result(timeout="10s") == "slow"
    assert [r["request"] for r in results] == [f"run-{i}" for i in range(5)]
    assert all(r["thread"].startswith(f"{PREFIX}_") for r in results)
    assert elapsed < 1.8, f"quick runs took {elapsed:.2f} s next to a 2 s step"


async def _doubled_later(value: int) -> int:
    await asyncio.sleep(0.01)
    return value * 2


_flaky_calls: list[int] = []


async def _fails_once(value: int) -> int:
    _flaky_calls.append(value)
    if len(_flaky_calls) == 1:
        raise RuntimeError("first call fails")
    return value + 1


@workflow(name="step-threads-awaitable")
async def awaitable_workflow(step: Step, input: int) -> list[int]:
    """Sync step bodies (lambdas) that return coroutines: their results are awaited."""
    doubled = await step.run("doubled", lambda: _doubled_later(input))
    retried = await step.run("retried", lambda: _fails_once(input), retry_policy=FAST_RETRY)
    return [doubled, retried]


async def test_a_sync_body_returning_a_coroutine_has_it_awaited(backend: Any) -> None:
    # A plain sync body runs straight on a step thread (no task of its own);
    # what it returns may still be an awaitable, which the loop then awaits.
    _flaky_calls.clear()
    client = OpenWorkflow(backend)
    async with running_worker(backend, [awaitable_workflow]):
        handle = await client.run(awaitable_workflow, 5)
        assert await handle.result(timeout="10s") == [10, 6]
    assert _flaky_calls == [5, 5]  # failed once, retried once
    steps = (await client.list_steps(handle.id)).data
    assert sorted((s.step_name, s.status) for s in steps) == [
        ("doubled", "completed"),
        ("retried", "completed"),
        ("retried", "failed"),
    ]
