"""Poison runs: a step that keeps killing its worker is failed, not run forever.

A crash is simulated the way the database sees one: a worker claims the run
with a short lease, writes a ``running`` attempt for the step (as a recovered
pass does before running a step), and never comes back, so the lease
expires. The real-process version (SIGKILL, os._exit) is in tests/faults.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openworkflow import OpenWorkflow, Step, Worker, workflow
from openworkflow.core.backend import CreateStepAttemptParams
from tests.support.waiting import wait_until
from tests.worker.helpers import (
    claim_as,
    list_steps,
    new_id,
    running_worker,
    wait_for_status,
)

CRASH_LEASE_MS = 50


async def _crash_inside_step(backend: Any, run_id: str, step_name: str) -> None:
    """A worker claims the run, starts ``step_name`` and dies (its lease runs out)."""
    worker_id = new_id()
    claimed = await wait_until(
        lambda: claim_as(backend, worker_id, CRASH_LEASE_MS), message=f"claim of {run_id}"
    )
    assert claimed.id == run_id
    await backend.create_step_attempt(
        CreateStepAttemptParams(
            workflow_run_id=run_id,
            worker_id=worker_id,
            step_name=step_name,
            kind="function",
            config={},
            context=None,
        )
    )
    await asyncio.sleep(CRASH_LEASE_MS / 1000 + 0.03)


async def test_a_step_left_unfinished_three_times_fails_the_run(backend: Any) -> None:
    ran: list[str] = []

    @workflow(name="crash-loop")
    async def poison(step: Step) -> str:
        await step.run("fine", lambda: ran.append("fine") or "ok")
        return str(await step.run("explode", lambda: ran.append("explode") or "never"))

    ow = OpenWorkflow(backend)
    handle = await ow.run(poison)
    for _ in range(3):
        await _crash_inside_step(backend, handle.id, "explode")

    async with running_worker(backend, [poison]):
        done = await wait_for_status(backend, handle.id, "completed", "failed")

    assert done.status == "failed"
    assert isinstance(done.error, dict)
    assert "left unfinished 3 times" in done.error["message"]
    assert done.error["name"] == "StepCrashLoopError"
    assert "explode" not in ran  # the poison step was not run a fourth time
    steps = await list_steps(backend, handle.id)
    explode = [s for s in steps if s.step_name == "explode"]
    # The crash-loop failure and the 3 leftover attempts it closed (SPEC 13).
    assert [s.status for s in explode].count("failed") == 4
    assert [s.status for s in explode].count("running") == 0


async def test_fewer_crashes_than_the_limit_still_complete(backend: Any) -> None:
    @workflow(name="crash-twice")
    async def survivor(step: Step) -> str:
        return str(await step.run("flaky", lambda: "done"))

    ow = OpenWorkflow(backend)
    handle = await ow.run(survivor)
    for _ in range(2):
        await _crash_inside_step(backend, handle.id, "flaky")

    async with running_worker(backend, [survivor]):
        done = await wait_for_status(backend, handle.id, "completed", "failed")
    assert done.status == "completed" and done.output == "done"


async def test_a_recovered_pass_records_each_step_before_running_it(backend: Any) -> None:
    """After a crash that left no trace (a quick step), the next pass writes the
    running attempt first, so a second crash in the same step is counted."""
    seen: list[list[str]] = []

    @workflow(name="crash-recorded")
    async def recorded(step: Step) -> str:
        async def look() -> str:
            steps = await list_steps(backend, handle.id)
            seen.append([f"{s.step_name}:{s.status}" for s in steps])
            return "looked"

        return str(await step.run("look", look))

    ow = OpenWorkflow(backend)
    handle = await ow.run(recorded)
    # The crashed worker got no further than the claim: no attempt was written.
    worker_id = new_id()
    await wait_until(lambda: claim_as(backend, worker_id, CRASH_LEASE_MS))
    await asyncio.sleep(CRASH_LEASE_MS / 1000 + 0.03)

    async with running_worker(backend, [recorded]):
        done = await wait_for_status(backend, handle.id, "completed", "failed")
    assert done.status == "completed"
    assert seen == [["look:running"]]


def test_the_crash_limit_is_validated(backend: Any) -> None:
    with pytest.raises(ValueError, match="step_crash_limit must be a whole number >= 1"):
        Worker(backend, [], step_crash_limit=0)


async def test_graceful_stops_during_a_long_step_do_not_count_as_crashes(backend: Any) -> None:
    """A worker stopped mid-step hands the run back and deletes the attempt it
    abandoned, so stops (deploys) never add up to a crash loop."""
    started: list[int] = []

    async def long_step() -> str:
        started.append(1)
        if len(started) <= 3:
            await asyncio.sleep(30)  # interrupted by the stop below
        return "done"

    @workflow(name="crash-stops")
    async def deployed(step: Step) -> str:
        return str(await step.run("long", long_step))

    ow = OpenWorkflow(backend)
    handle = await ow.run(deployed)
    for stops in range(1, 4):
        async with running_worker(backend, [deployed], shutdown_timeout="100ms"):
            await wait_until(lambda stops=stops: len(started) == stops)
            await asyncio.sleep(0.1)  # past the one-write window: a running attempt exists
        steps = await list_steps(backend, handle.id)
        assert [s.status for s in steps] == [], steps  # the abandoned attempt was deleted
    # A crash on top (the lease expires) must not make it a crash loop.
    await _crash_inside_step(backend, handle.id, "long")
    async with running_worker(backend, [deployed]):
        done = await wait_for_status(backend, handle.id, "completed", "failed")
    assert done.status == "completed" and done.output == "done", done.error
