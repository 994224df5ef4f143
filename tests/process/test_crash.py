"""Real processes: a worker SIGKILLed in the middle of a step, and another that finishes the run."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from openworkflow import OpenWorkflow, SqliteBackend
from tests.support.crash_app import READY_MARKER, crash_test
from tests.support.processes import WorkerProcess
from tests.support.waiting import block_until
from tests.worker.helpers import wait_for_running_step

pytestmark = pytest.mark.slow


class CrashWorker(WorkerProcess):
    """``python -m tests.support.crash_app DB LEDGER``."""

    module = "tests.support.crash_app"
    ready_marker = READY_MARKER


def _start_worker(database: Path, ledger: Path, *, hang: bool) -> CrashWorker:
    log = ledger.with_name("hanging-worker.log" if hang else "worker.log")
    env = {"OW_TEST_HANG_IN_STEP": "1" if hang else "0"}
    return CrashWorker(log, [str(database), str(ledger)], env)


def _ledger(ledger: Path) -> list[str]:
    if not ledger.exists():
        return []
    return [line for line in ledger.read_text().splitlines() if not line.startswith("worker-")]


async def test_sigkill_mid_step_resumes_on_another_worker(tmp_path: Path) -> None:
    database, ledger = tmp_path / "crash.db", tmp_path / "ledger.txt"
    backend = SqliteBackend(str(database))
    ow = OpenWorkflow(backend)
    handle = await ow.run(crash_test)

    first = _start_worker(database, ledger, hang=True)
    try:
        await asyncio.to_thread(
            block_until,
            lambda: "two-start" in _ledger(ledger),
            "the first worker's step two",
            30,
            interval=0.02,
        )
        # A step is recorded as running once it outlasts QUICK_STEP_S: kill after that.
        await wait_for_running_step(backend, handle.id, "two")
        killed_at = time.monotonic()
        first.signal(signal.SIGKILL)
        first.process.wait(10)
    finally:
        first.kill()

    run = await ow.get_run(handle.id)
    assert run is not None and run.status == "running" and run.worker_id is not None

    second = _start_worker(database, ledger, hang=False)
    try:
        output = await handle.result(timeout="30s")
        recovered_after = time.monotonic() - killed_at
    finally:
        second.signal(signal.SIGTERM)
        second.process.wait(30)

    assert output == ["one", "two-end", "three"]
    # Step one completed before the kill and is never executed again; the
    # in-flight step two runs again (at-least-once); step three runs once.
    assert _ledger(ledger) == ["one", "two-start", "two-start", "two-end", "three"]
    steps = (await ow.list_steps(handle.id)).data
    assert [(s.step_name, s.status) for s in steps] == [
        ("one", "completed"),
        ("two", "failed"),  # orphaned by the kill, closed when the run completed (SPEC 13)
        ("two", "completed"),
        ("three", "completed"),
    ]
    final = await ow.get_run(handle.id)
    assert final is not None and final.attempts == 2
    # Recovery waits for the 1 s lease to expire, plus the idle poll interval.
    assert recovered_after < 15
    assert second.process.returncode == 0
    await backend.stop()
