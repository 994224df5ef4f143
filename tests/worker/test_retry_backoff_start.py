"""A retry's backoff counts from the step's failure, not from the write of its attempt.

A quick step that fails is recorded after the fact: its attempt is written
once the body has ended. That write (a group commit, a busy database) may
take a while; the retry's due time must not move with it. The attempt write
is slowed down by 500 ms here, and the stored due time is compared with the
moment the body failed. Nor may it move with the event loop: a sync body
ends in its thread, and a busy loop may see that tens of milliseconds later
(past the quick-step wait, so the attempt is written before its failure is
read); here the body blocks the loop for 500 ms as it fails.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

from openworkflow import OpenWorkflow, RetryPolicy, Step, workflow
from openworkflow.core import clock
from openworkflow.core.backend import GetWorkflowRunParams
from tests.support.waiting import wait_until
from tests.worker.helpers import running_worker

INTERVAL = timedelta(seconds=2)
SLOW_WRITE_S = 0.5

_failed_at: dict[str, datetime] = {}


def _fail(key: str) -> None:
    _failed_at[key] = clock.now()
    raise RuntimeError("the only attempt before the retry fails")


def _fail_under_a_busy_loop(key: str, loop: asyncio.AbstractEventLoop) -> None:
    loop.call_soon_threadsafe(time.sleep, SLOW_WRITE_S)  # the loop sees the failure late
    _fail(key)


@workflow(name="backoff-from-failure")
async def fails_quickly(step: Step, input: str) -> None:
    """A step that fails at once; its retry is due 2 s later."""
    policy = RetryPolicy(initial_interval="2s", maximum_attempts=2)
    await step.run("flaky", lambda: _fail(input), retry_policy=policy)


@workflow(name="backoff-under-a-busy-loop")
async def fails_under_a_busy_loop(step: Step, input: str) -> None:
    """A sync step that fails while the event loop is busy; its retry is due 2 s later."""
    policy = RetryPolicy(initial_interval="2s", maximum_attempts=2)
    loop = asyncio.get_running_loop()
    await step.run("flaky", lambda: _fail_under_a_busy_loop(input, loop), retry_policy=policy)


async def test_the_backoff_counts_from_the_failure(backend: Any) -> None:
    write = backend.create_step_attempt

    async def slow_write(params: Any) -> Any:
        await asyncio.sleep(SLOW_WRITE_S)
        return await write(params)

    backend.create_step_attempt = slow_write
    await _assert_due_after_failure(backend, fails_quickly)


async def test_the_backoff_counts_from_the_failure_in_its_thread(backend: Any) -> None:
    await _assert_due_after_failure(backend, fails_under_a_busy_loop)


async def _assert_due_after_failure(backend: Any, workflow_fn: Any) -> None:
    key = f"key-{id(backend)}"
    handle = await OpenWorkflow(backend).run(workflow_fn, key)
    async with running_worker(backend, [workflow_fn], lease_duration="30s"):

        async def rescheduled() -> bool:
            run = await backend.get_workflow_run(GetWorkflowRunParams(workflow_run_id=handle.id))
            return run is not None and run.status == "pending" and run.attempts == 1

        await wait_until(rescheduled, timeout=10, message="the run rescheduled for its retry")
    run = await backend.get_workflow_run(GetWorkflowRunParams(workflow_run_id=handle.id))
    assert run is not None and run.available_at is not None
    late_by = run.available_at - (_failed_at[key] + INTERVAL)
    # Within clock rounding and the database clock's correction, never the slow write
    # nor the busy loop.
    assert late_by < timedelta(seconds=SLOW_WRITE_S / 2), late_by
