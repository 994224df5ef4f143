"""The worker: slots, tick(), leases and heartbeats, shutdown, registration, versions."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from openworkflow import OpenWorkflow, Step, Worker, declare_workflow, workflow
from openworkflow.errors import DuplicateWorkflowError, WorkflowDefinitionError
from tests.support.waiting import wait_until
from tests.worker.helpers import (
    LEASE,
    attempts_named,
    claim_as,
    get_run,
    idle_worker,
    list_steps,
    make_worker,
    new_id,
    now,
    running_worker,
    sweep_and_settle,
    tick_and_settle,
    wait_for_running_step,
    wait_idle,
)

# -- slots and tick() -------------------------------------------------------------------


async def test_concurrency_limit_is_respected(backend: Any) -> None:
    state = {"active": 0, "peak": 0}

    async def work() -> None:
        state["active"] += 1
        state["peak"] = max(state["peak"], state["active"])
        await asyncio.sleep(0.05)
        state["active"] -= 1

    @workflow
    async def busy(step: Step) -> str:
        await step.run("work", work)
        return "ok"

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [busy], concurrency=3):
        handles = [await ow.run(busy) for _ in range(8)]
        for handle in handles:
            assert await handle.result(timeout="10s") == "ok"

    assert state["peak"] == 3


async def test_tick_claims_one_run_per_free_slot_and_returns_the_count(backend: Any) -> None:
    release = asyncio.Event()

    async def gate() -> None:
        await release.wait()

    @workflow
    async def gated(step: Step) -> str:
        await step.run("gate", gate)
        return "passed"

    ow = OpenWorkflow(backend)
    async with idle_worker(backend, [gated], concurrency=2) as worker:
        assert await worker.tick() == 0, "nothing to claim yet"
        handles = [await ow.run(gated) for _ in range(3)]

        assert await worker.tick() == 2
        active = set(worker.active_run_ids)
        assert len(active) == 2 and active <= {handle.id for handle in handles}
        owners = {(await get_run(backend, run_id)).worker_id for run_id in active}
        assert len(owners) == 2 and None not in owners, "one worker id per slot"

        assert await worker.tick() == 0, "both slots are busy although a run is pending"
        (waiting,) = [handle for handle in handles if handle.id not in active]
        assert (await get_run(backend, waiting.id)).status == "pending"

        release.set()
        await wait_idle(worker)
        assert await tick_and_settle(worker) == 1
        assert await worker.tick() == 0

    for handle in handles:
        assert await handle.result(timeout="1s") == "passed"


async def test_worker_options_are_validated(backend: Any) -> None:
    @workflow
    async def anything() -> None:
        return None

    for concurrency in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="concurrency"):
            Worker(backend, [anything], concurrency=concurrency)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lease_duration"):
        Worker(backend, [anything], lease_duration="1ms")


async def test_new_worker_and_async_with(backend: Any) -> None:
    @workflow
    async def hello(input: dict) -> str:
        return f"hello {input['name']}"

    ow = OpenWorkflow(backend)
    worker = ow.new_worker([hello], lease_duration=LEASE)
    assert worker.concurrency == Worker(backend, [hello]).concurrency == 1  # one default
    async with worker:
        handle = await ow.run(hello, {"name": "ada"})
        assert await handle.result(timeout="5s") == "hello ada"
    assert await worker.tick() == 0, "a stopped worker claims nothing"


# -- leases and heartbeats ---------------------------------------------------------------


def _holding_workflow(started: asyncio.Event, outcome: list[str], after: list[int]) -> Any:
    """A workflow whose first step blocks until cancelled, recording the cancellation."""

    async def hold() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    @workflow
    async def holder(step: Step) -> str:
        await step.run("hold", hold)
        await step.run("after", lambda: after.append(1))
        return "done"

    return holder


async def test_a_lost_lease_cancels_the_execution(backend: Any, clock: Any) -> None:
    started = asyncio.Event()
    outcome: list[str] = []
    after: list[int] = []
    holder = _holding_workflow(started, outcome, after)

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [holder], heartbeat_interval="50ms") as worker:
        handle = await ow.run(holder)
        await wait_until(started.is_set, message="the step body to start")
        await wait_for_running_step(backend, handle.id, "hold")

        # The lease expires (the clock jumps) and another worker takes the run over.
        thief = new_id()

        async def steal() -> Any:
            clock.advance(timedelta(hours=1))
            return await claim_as(backend, thief, lease_ms=24 * 3600 * 1000)

        stolen = await wait_until(steal, message="another worker to take the run over")
        assert (stolen.id, stolen.attempts) == (handle.id, 2)

        await wait_until(lambda: outcome == ["cancelled"], message="the execution to be cancelled")
        await wait_idle(worker)

    run = await get_run(backend, handle.id)
    assert (run.status, run.worker_id, run.attempts) == ("running", thief, 2)
    steps = await list_steps(backend, handle.id)
    assert [(step.step_name, step.status, step.output) for step in steps] == [
        ("hold", "running", None)
    ], "the first worker wrote nothing after losing the lease"
    assert after == []


async def test_canceling_a_running_run_cancels_its_execution(backend: Any) -> None:
    started = asyncio.Event()
    outcome: list[str] = []
    after: list[int] = []
    holder = _holding_workflow(started, outcome, after)

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [holder], heartbeat_interval="50ms") as worker:
        handle = await ow.run(holder)
        await wait_until(started.is_set, message="the step body to start")
        await wait_for_running_step(backend, handle.id, "hold")
        canceled = await ow.cancel(handle.id)
        # The next heartbeat finds the run is no longer ours and cancels the task.
        await wait_until(
            lambda: outcome == ["cancelled"], timeout=2, message="the execution to be cancelled"
        )
        await wait_idle(worker)

    assert await get_run(backend, handle.id) == canceled
    steps = await list_steps(backend, handle.id)
    assert [(step.step_name, step.status) for step in steps] == [("hold", "failed")]  # closed
    assert after == []


async def test_heartbeats_keep_a_long_sync_step_leased(backend: Any) -> None:
    calls: list[int] = []
    body_started = threading.Event()
    body_done = threading.Event()

    def long_blocking_call() -> str:
        calls.append(1)
        body_started.set()
        time.sleep(0.6)  # three leases long; blocks its thread, not the event loop
        body_done.set()
        return "done"

    @workflow
    async def long_step(step: Step) -> str:
        return await step.run("long", long_blocking_call)

    ow = OpenWorkflow(backend)
    # A second worker polls all along: a lapsed lease would let it take the run.
    async with (
        running_worker(backend, [long_step], lease_duration="200ms"),
        running_worker(backend, [long_step], lease_duration="200ms"),
    ):
        handle = await ow.run(long_step)
        await wait_until(body_started.is_set, message="the step body to start")
        loop = asyncio.get_running_loop()
        leases = set()
        longest_gap = 0.0
        last = loop.time()
        while not body_done.is_set():
            leases.add((await get_run(backend, handle.id)).available_at)
            await asyncio.sleep(0.02)
            longest_gap = max(longest_gap, loop.time() - last)
            last = loop.time()
        assert await handle.result(timeout="5s") == "done"

    assert longest_gap < 0.3, "the sync step body blocked the event loop"
    assert len(leases) >= 3, "the lease was renewed while the body ran"
    assert calls == [1]
    assert (await get_run(backend, handle.id)).attempts == 1


async def test_a_crashed_workers_run_is_resumed_after_its_lease(backend: Any) -> None:
    @workflow
    async def resumable(step: Step) -> str:
        return await step.run("work", lambda: "resumed")

    ow = OpenWorkflow(backend)
    handle = await ow.run(resumable)
    # A worker claims the run and dies: no heartbeat, no writes.
    crashed = await claim_as(backend, "crashed-worker", lease_ms=100)
    assert crashed is not None and crashed.id == handle.id

    async with running_worker(backend, [resumable]):
        assert await handle.result(timeout="5s") == "resumed"

    run = await get_run(backend, handle.id)
    assert run.attempts == 2
    assert run.worker_id not in (None, "crashed-worker")
    assert run.started_at == crashed.started_at, "started_at survives the takeover"


# -- stopping ------------------------------------------------------------------------------


async def test_stop_waits_for_in_flight_passes(backend: Any) -> None:
    started = asyncio.Event()

    async def slow() -> str:
        started.set()
        await asyncio.sleep(0.2)
        return "slow"

    @workflow
    async def finishing(step: Step) -> list[str]:
        first = await step.run("slow", slow)
        second = await step.run("next", lambda: "next")
        return [first, second]

    ow = OpenWorkflow(backend)
    worker = make_worker(backend, [finishing], shutdown_timeout="5s")
    await worker.start()
    handle = await ow.run(finishing)
    await wait_until(started.is_set, message="the step body to start")
    await worker.stop()

    # The whole pass finished before stop() returned.
    run = await get_run(backend, handle.id)
    assert (run.status, run.output) == ("completed", ["slow", "next"])
    assert worker.active_run_ids == []

    later = await ow.run(finishing)
    assert await worker.tick() == 0, "a stopped worker claims nothing"
    assert (await get_run(backend, later.id)).status == "pending"


def _blocking_workflow(
    started: asyncio.Event, blocked: dict[str, bool], cancelled: list[int]
) -> Any:
    async def work() -> str:
        started.set()
        if blocked["value"]:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(1)
                raise
        return "worked"

    @workflow
    async def long_job(step: Step) -> str:
        return await step.run("work", work)

    return long_job


async def test_stop_after_the_shutdown_timeout_releases_the_lease(backend: Any) -> None:
    started = asyncio.Event()
    blocked = {"value": True}
    cancelled: list[int] = []
    long_job = _blocking_workflow(started, blocked, cancelled)

    ow = OpenWorkflow(backend)
    worker = make_worker(backend, [long_job], shutdown_timeout="100ms")
    await worker.start()
    handle = await ow.run(long_job)
    await wait_until(started.is_set, message="the step body to start")

    loop = asyncio.get_running_loop()
    began = loop.time()
    await worker.stop()
    assert loop.time() - began < 2

    assert cancelled == [1], "the unfinished pass was cancelled"
    released = await get_run(backend, handle.id)
    assert (released.status, released.worker_id) == ("running", None)
    assert released.available_at is not None and released.available_at <= now()
    assert released.attempts == 1
    # The attempt the stopped pass abandoned is deleted with the hand-back (a
    # stop is not a crash: it must not count towards the step's crash limit).
    assert await list_steps(backend, handle.id) == []

    # Another worker picks the run up at once and finishes it.
    blocked["value"] = False
    async with running_worker(backend, [long_job]):
        assert await handle.result(timeout="5s") == "worked"

    run = await get_run(backend, handle.id)
    assert run.attempts == 2
    work_attempts = attempts_named(await list_steps(backend, handle.id), "work")
    assert [step.status for step in work_attempts] == ["completed"]


async def test_a_second_stop_stops_at_once(backend: Any) -> None:
    started = asyncio.Event()
    cancelled: list[int] = []
    long_job = _blocking_workflow(started, {"value": True}, cancelled)

    ow = OpenWorkflow(backend)
    worker = make_worker(backend, [long_job], shutdown_timeout="30s")
    await worker.start()
    handle = await ow.run(long_job)
    await wait_until(started.is_set, message="the step body to start")

    loop = asyncio.get_running_loop()
    began = loop.time()
    graceful = asyncio.create_task(worker.stop())
    await asyncio.sleep(0.05)  # the graceful stop is now waiting for the pass
    assert not graceful.done()
    await worker.stop()
    await asyncio.wait_for(graceful, timeout=5)
    assert loop.time() - began < 2, "the second stop did not wait for the 30 s timeout"

    assert cancelled == [1]
    released = await get_run(backend, handle.id)
    assert (released.status, released.worker_id) == ("running", None)
    assert released.available_at is not None and released.available_at <= now()


# -- registration and definitions --------------------------------------------------------------


async def test_duplicate_registration_names_both_places(backend: Any) -> None:
    @workflow(name="dup")
    async def first_impl() -> int:
        return 1

    @workflow(name="dup")
    async def second_impl() -> int:
        return 2

    with pytest.raises(DuplicateWorkflowError) as raised:
        Worker(backend, [first_impl, second_impl])
    message = str(raised.value)
    assert 'Workflow "dup" is already registered' in message
    assert first_impl.source != second_impl.source
    assert "test_worker.py:" in first_impl.source
    assert first_impl.source in message
    assert second_impl.source in message

    @workflow(name="dup", version="v1")
    async def versioned_one() -> int:
        return 1

    @workflow(name="dup", version="v1")
    async def versioned_two() -> int:
        return 2

    with pytest.raises(DuplicateWorkflowError, match=r'Workflow "dup" \(version: v1\) is already'):
        OpenWorkflow(backend).new_worker([versioned_one, versioned_two])

    # Other versions of one name coexist, and the same object twice is no conflict.
    Worker(backend, [first_impl, versioned_one, first_impl])


def test_a_non_async_workflow_function_is_rejected_naming_it() -> None:
    def sync_workflow(input: dict) -> dict:
        return input

    with pytest.raises(WorkflowDefinitionError, match=r"sync_workflow.*async def"):
        workflow(sync_workflow)  # type: ignore[arg-type]
    with pytest.raises(WorkflowDefinitionError, match="sync_workflow"):
        workflow(name="named")(sync_workflow)  # type: ignore[arg-type]
    with pytest.raises(WorkflowDefinitionError, match="sync_workflow"):
        declare_workflow("declared").implement(sync_workflow)  # type: ignore[arg-type]


def test_an_unknown_workflow_parameter_is_rejected_naming_it() -> None:
    async def takes_context(input: dict, ctx: dict) -> None:
        return None

    with pytest.raises(WorkflowDefinitionError) as raised:
        workflow(takes_context)
    message = str(raised.value)
    assert "takes_context" in message
    assert "'ctx'" in message
    assert "input, step, run, version" in message

    async def variadic(*args: Any) -> None:
        return None

    with pytest.raises(WorkflowDefinitionError, match="variadic"):
        workflow(variadic)


# -- versions ----------------------------------------------------------------------------------


async def test_an_unregistered_version_is_rescheduled_until_a_capable_worker_runs_it(
    backend: Any, clock: Any
) -> None:
    @workflow(name="greet", version="v1")
    async def greet_v1(version: str | None) -> str:
        return f"v1 code, run version {version}"

    @workflow(name="greet", version="v2")
    async def greet_v2(version: str | None) -> str:
        return f"v2 code, run version {version}"

    ow = OpenWorkflow(backend)
    handle = await ow.run(greet_v2)
    async with (
        idle_worker(backend, [greet_v1]) as old_worker,
        idle_worker(backend, [greet_v2]) as new_worker,
    ):
        before = now()
        assert await old_worker.tick() == 0, "routed: the claim skips a version it lacks"
        # No live worker has v2 yet: the sweep takes it, warns and reschedules it.
        await sweep_and_settle(old_worker, expected=1)
        run = await get_run(backend, handle.id)
        assert (run.status, run.worker_id, run.attempts) == ("pending", None, 1)
        assert run.error == {"message": 'Workflow "greet" (version: v2) is not registered'}
        assert run.available_at is not None
        assert before + timedelta(seconds=5) <= run.available_at <= now() + timedelta(seconds=5)
        assert await new_worker.tick() == 0, "rescheduled with a 5 s backoff"

        clock.advance(timedelta(seconds=6))
        await tick_and_settle(new_worker, expected=1)

    assert await handle.result(timeout="1s") == "v2 code, run version v2"
    run = await get_run(backend, handle.id)
    assert (run.attempts, run.error) == (2, None)


async def test_version_matching_is_exact(backend: Any, clock: Any) -> None:
    @workflow(name="exact")
    async def exact_unversioned() -> str:
        return "unversioned"

    @workflow(name="exact", version="v1")
    async def exact_v1() -> str:
        return "v1"

    ow = OpenWorkflow(backend)
    async with (
        idle_worker(backend, [exact_v1]) as v1_only,
        idle_worker(backend, [exact_unversioned]) as unversioned_only,
        idle_worker(backend, [exact_unversioned, exact_v1], concurrency=2) as both,
    ):
        unversioned_run = await ow.run(exact_unversioned)
        assert await v1_only.tick() == 0
        await sweep_and_settle(v1_only, expected=1)
        assert (await get_run(backend, unversioned_run.id)).error == {
            "message": 'Workflow "exact" is not registered'
        }

        versioned_run = await ow.run(exact_v1)
        assert await unversioned_only.tick() == 0
        assert await unversioned_only.sweep_unrouted() == 0, "v1_only is live and runs it"
        await tick_and_settle(v1_only, expected=1)

        clock.advance(timedelta(seconds=6))
        await tick_and_settle(both, expected=1)

    assert await unversioned_run.result(timeout="1s") == "unversioned"
    assert await versioned_run.result(timeout="1s") == "v1"
