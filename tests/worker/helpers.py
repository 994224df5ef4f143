"""Helpers shared by the worker, execution and client tests.

Everything goes through the public API (``OpenWorkflow``, ``Worker``) or the
``Backend`` protocol, so the tests run unchanged on every backend the
``backend`` fixture is parametrized over.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from openworkflow import RetryPolicy, StepAttempt, Worker, Workflow, WorkflowRun
from openworkflow.core import clock
from openworkflow.core.backend import (
    Backend,
    ClaimWorkflowRunParams,
    GetWorkflowRunParams,
    ListStepAttemptsParams,
)
from tests.support.waiting import DEFAULT_TIMEOUT, wait_until

LEASE = "500ms"
"""Short lease used by every test worker, so lost leases are noticed quickly."""

SHUTDOWN_TIMEOUT = "1s"
"""How long a test worker's stop() waits: a broken test must not hang its teardown."""

FAST_RETRY = RetryPolicy(initial_interval="10ms", maximum_attempts=3)
"""A step policy that retries quickly: three attempts, 10 ms apart."""


def now() -> datetime:
    """The application clock (moved by the ``clock`` fixture)."""
    return clock.now()


def new_id() -> str:
    """A random UUID string."""
    return str(uuid.uuid4())


async def get_run(backend: Backend, run_id: str) -> WorkflowRun:
    """The run, which must exist."""
    run = await backend.get_workflow_run(GetWorkflowRunParams(workflow_run_id=run_id))
    if run is None:
        raise AssertionError(f"workflow run {run_id} does not exist")
    return run


async def wait_for_run(
    backend: Backend,
    run_id: str,
    condition: Callable[[WorkflowRun], bool],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    message: str = "the run to reach the expected state",
) -> WorkflowRun:
    """Poll the run until ``condition(run)`` holds; return that row."""

    async def check() -> WorkflowRun | None:
        run = await get_run(backend, run_id)
        return run if condition(run) else None

    return await wait_until(check, timeout=timeout, message=message)


async def wait_for_status(
    backend: Backend, run_id: str, *statuses: str, timeout: float = DEFAULT_TIMEOUT
) -> WorkflowRun:
    """Poll the run until its status is one of ``statuses``."""
    return await wait_for_run(
        backend,
        run_id,
        lambda run: run.status in statuses,
        timeout=timeout,
        message=f"run {run_id} to become {' or '.join(statuses)}",
    )


async def wait_for_parked(backend: Backend, run_id: str) -> WorkflowRun:
    """Poll until the run is parked: running with no owner."""
    return await wait_for_run(
        backend,
        run_id,
        lambda run: run.status == "running" and run.worker_id is None,
        message=f"run {run_id} to park",
    )


async def wait_for_running_step(backend: Backend, run_id: str, step_name: str) -> StepAttempt:
    """Wait until the step's running attempt is recorded.

    A step that returns quickly is written once, when it finishes; a slow one
    gets its running attempt after ``QUICK_STEP_S``. Tests that act "while a
    step runs" wait for that row first.
    """

    async def running() -> StepAttempt | None:
        for attempt in await list_steps(backend, run_id):
            if attempt.step_name == step_name and attempt.status == "running":
                return attempt
        return None

    return await wait_until(running, message=f"step {step_name!r} to be recorded as running")


async def list_steps(backend: Backend, run_id: str) -> list[StepAttempt]:
    """Every step attempt of the run, oldest first (all pages)."""
    attempts: list[StepAttempt] = []
    cursor: str | None = None
    while True:
        page = await backend.list_step_attempts(
            ListStepAttemptsParams(workflow_run_id=run_id, after=cursor, limit=500)
        )
        attempts.extend(page.data)
        if page.next is None:
            return attempts
        cursor = page.next


def step_names(attempts: Iterable[StepAttempt]) -> list[str]:
    """Step names in attempt order."""
    return [attempt.step_name for attempt in attempts]


def steps_by_name(attempts: Iterable[StepAttempt]) -> dict[str, StepAttempt]:
    """The attempts keyed by step name (each name must appear once).

    Attempts created in the same millisecond are listed in id order, not
    creation order, so tests compare names and outputs rather than list order.
    """
    by_name: dict[str, StepAttempt] = {}
    for attempt in attempts:
        if attempt.step_name in by_name:
            raise AssertionError(f"step {attempt.step_name!r} has more than one attempt")
        by_name[attempt.step_name] = attempt
    return by_name


def attempts_named(attempts: Iterable[StepAttempt], name: str) -> list[StepAttempt]:
    """The attempts of one step, oldest first."""
    return [attempt for attempt in attempts if attempt.step_name == name]


def make_worker(backend: Backend, workflows: Iterable[Workflow], **options: Any) -> Worker:
    """A worker with the tests' short lease and shutdown timeout (overridable)."""
    options.setdefault("lease_duration", LEASE)
    options.setdefault("shutdown_timeout", SHUTDOWN_TIMEOUT)
    return Worker(backend, workflows, **options)


@asynccontextmanager
async def running_worker(
    backend: Backend, workflows: Iterable[Workflow], **options: Any
) -> AsyncIterator[Worker]:
    """Start a worker for the duration of the block, then stop it."""
    worker = make_worker(backend, workflows, **options)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


@asynccontextmanager
async def idle_worker(
    backend: Backend, workflows: Iterable[Workflow], **options: Any
) -> AsyncIterator[Worker]:
    """A worker whose loop is not started: the test drives it with ``tick()``."""
    worker = make_worker(backend, workflows, **options)
    try:
        yield worker
    finally:
        await worker.stop()


async def wait_idle(worker: Worker, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Wait until the worker executes nothing."""
    await wait_until(
        lambda: not worker.active_run_ids, timeout=timeout, message="the worker to become idle"
    )


async def tick_and_settle(worker: Worker, *, expected: int | None = None) -> int:
    """Claim with ``worker.tick()`` (its loop not started) and wait for the passes to end."""
    claimed = await worker.tick()
    if expected is not None and claimed != expected:
        raise AssertionError(f"tick() claimed {claimed} runs, expected {expected}")
    await wait_idle(worker)
    return claimed


async def sweep_and_settle(worker: Worker, *, expected: int | None = None) -> int:
    """Claim runs no live worker knows (``worker.sweep_unrouted()``); wait for their passes."""
    claimed = await worker.sweep_unrouted()
    if expected is not None and claimed != expected:
        raise AssertionError(f"sweep_unrouted() claimed {claimed} runs, expected {expected}")
    await wait_idle(worker)
    return claimed


async def claim_as(backend: Backend, worker_id: str, lease_ms: int) -> WorkflowRun | None:
    """Claim the next available run as an arbitrary worker id (a 'foreign' worker)."""
    return await backend.claim_workflow_run(
        ClaimWorkflowRunParams(worker_id=worker_id, lease_duration_ms=lease_ms)
    )
