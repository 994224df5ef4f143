"""Real processes: a worker SIGKILLed in the middle of a step, and another that finishes the run."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from openworkflow import OpenWorkflow, SqliteBackend
from tests.process.app import crash_test
from tests.worker.helpers import wait_for_running_step

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def _start_worker(database: Path, ledger: Path, *, hang: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OW_TEST_HANG_IN_STEP": "1" if hang else "0", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.process.app", str(database), str(ledger)],
        cwd=ROOT,
        env=env,
    )


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


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
            _wait_for, lambda: "two-start" in _ledger(ledger), 30, "the first worker's step two"
        )
        # A step is recorded as running once it outlasts QUICK_STEP_S: kill after that.
        await wait_for_running_step(backend, handle.id, "two")
        killed_at = time.monotonic()
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()

    run = await ow.get_run(handle.id)
    assert run is not None and run.status == "running" and run.worker_id is not None

    second = _start_worker(database, ledger, hang=False)
    try:
        output = await handle.result(timeout="30s")
        recovered_after = time.monotonic() - killed_at
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)

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
    assert second.returncode == 0
    await backend.stop()
