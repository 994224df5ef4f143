"""A retry sent back until later wakes the idle workers, as a parked sleep does.

A busy worker (one slot) fails a step (or the whole run) with a retry due in
300 ms, then takes other work that holds its slot. Another worker, idle all
along and polling no sooner than once a minute, must hear of the retry's due
time (the "due later" notification on PostgreSQL; SQLite's watcher sees every
commit) and resume it on time, not at its next poll.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from openworkflow import OpenWorkflow, RetryPolicy, Step, workflow
from tests.fixtures.backends import _open_backend
from tests.support.waiting import wait_until
from tests.worker.helpers import running_worker

RETRY_MS = 300


WAKE_TIMEOUT_S = 2.0
"""Generous bound for a wake-up that must not wait for the poll."""


_blocker_gate = threading.Event()
_retry_gate = threading.Event()
_failed_once: set[str] = set()


def _fail_once(key: str) -> str:
    """Raise the first time for ``key``; then succeed."""
    if key not in _failed_once:
        _failed_once.add(key)
        raise RuntimeError("the first attempt fails")
    return "recovered"


@workflow(name="due-later-blocked")
async def blocked(step: Step, input: None) -> str:
    """Hold the busy worker's slot until the test opens the gate."""
    await step.run("wait", lambda: _blocker_gate.wait(10))
    return "unblocked"


@workflow(name="due-later-step-retry")
async def step_retry(step: Step, input: str) -> str:
    """Wait for the test's gate, then run a step that fails once (retried in 300 ms)."""
    await step.run("gate", lambda: _retry_gate.wait(10))
    policy = RetryPolicy(initial_interval=f"{RETRY_MS}ms", maximum_attempts=2)
    result: str = await step.run("flaky", lambda: _fail_once(input), retry_policy=policy)
    return result


@workflow(
    name="due-later-run-retry",
    retry_policy=RetryPolicy(initial_interval=f"{RETRY_MS}ms", maximum_attempts=2),
)
async def run_retry(step: Step, input: str) -> str:
    """Wait for the test's gate, then fail the whole run once (retried in 300 ms)."""
    await step.run("gate", lambda: _retry_gate.wait(10))
    return _fail_once(input)


@pytest.mark.usefixtures("slow_polls")
@pytest.mark.parametrize("retried", [step_retry, run_retry], ids=["step", "run"])
async def test_an_idle_worker_resumes_a_retry_a_busy_worker_rescheduled(
    backend: Any, backend_kind: str, tmp_path: Path, retried: Any
) -> None:
    if backend_kind == "sqlite_memory":
        pytest.skip("another process cannot open an in-memory database")
    other = _open_backend(backend_kind, tmp_path, backend.namespace_id)
    _blocker_gate.clear()
    _retry_gate.clear()
    try:
        # Long leases: no lease end comes due (and sends the idle worker reading) meanwhile.
        options: dict[str, Any] = {"concurrency": 1, "lease_duration": "30s"}
        async with running_worker(other, [retried, blocked], **options) as busy:
            handle = await OpenWorkflow(other).run(retried, str(tmp_path))
            await wait_until(lambda: handle.id in busy.active_run_ids)
            async with running_worker(backend, [retried], lease_duration="30s"):
                await asyncio.sleep(0.3)  # idle now: it has claimed and read once
                blocker = await OpenWorkflow(other).run(blocked, None)
                await asyncio.sleep(0.3)  # its wake-up (a claim, a read) is over
                _retry_gate.set()  # the retry is rescheduled; the busy worker takes the blocker
                await wait_until(lambda: blocker.id in busy.active_run_ids)
                client = OpenWorkflow(backend)
                result = await client.handle(handle.id).result(timeout=WAKE_TIMEOUT_S)
                assert result == "recovered"
            _blocker_gate.set()
            assert await blocker.result(timeout=WAKE_TIMEOUT_S) == "unblocked"
    finally:
        _blocker_gate.set()
        _retry_gate.set()
        await other.stop()
