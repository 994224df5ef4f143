"""Real processes: a worker SIGKILLed right after a saga compensated, another finishes the run."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from openworkflow import OpenWorkflow
from tests.fixtures.backends import backend_url
from tests.support.processes import WorkerProcess
from tests.support.saga_app import READY_MARKER, saga_crash
from tests.support.waiting import block_until
from tests.worker.helpers import list_steps, wait_for_running_step

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite_file", "postgres"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    """Only backends another process can open (overrides the fixture of every kind)."""
    return str(request.param)


class SagaWorker(WorkerProcess):
    """``python -m tests.support.saga_app LEDGER``, its backend named in the environment."""

    module = "tests.support.saga_app"
    ready_marker = READY_MARKER


def _start_worker(url: str, namespace: str, ledger: Path, *, hang: bool) -> SagaWorker:
    log = ledger.with_name("hanging-worker.log" if hang else "worker.log")
    env = {
        "OW_TEST_BACKEND_URL": url,
        "OW_TEST_NAMESPACE": namespace,
        "OW_TEST_HANG_AFTER_COMPENSATION": "1" if hang else "0",
    }
    return SagaWorker(log, [str(ledger)], env)


def _ledger(ledger: Path) -> list[str]:
    return ledger.read_text().splitlines() if ledger.exists() else []


async def test_compensations_run_once_across_a_sigkill(
    backend: Any, backend_kind: str, tmp_path: Path
) -> None:
    url = backend_url(backend_kind, backend)
    assert url is not None
    ledger = tmp_path / "ledger.txt"
    ow = OpenWorkflow(backend)
    handle = await ow.run(saga_crash)

    first = _start_worker(url, backend.namespace_id, ledger, hang=True)
    try:
        await asyncio.to_thread(
            block_until,
            lambda: "summary-start" in _ledger(ledger),
            "the first worker to compensate and reach the summary step",
            30,
            interval=0.02,
        )
        await wait_for_running_step(backend, handle.id, "summary")
        first.signal(signal.SIGKILL)
        first.process.wait(10)
    finally:
        first.kill()
    compensated_before_the_kill = _ledger(ledger)

    second = _start_worker(url, backend.namespace_id, ledger, hang=False)
    try:
        output = await handle.result(timeout="30s")
    finally:
        second.signal(signal.SIGTERM)
        second.process.wait(30)

    assert output == {"status": "compensated", "compensated": ["hotel", "flight"]}
    assert compensated_before_the_kill == [
        *("book-flight", "book-hotel", "book-car"),
        *("cancel book-hotel", "cancel book-flight"),
        "summary-start",
    ]
    # The second worker replayed the saga: the car's memoized failure took the
    # same branch, the compensations returned their stored results; only the
    # step cut short by the kill ran again.
    assert _ledger(ledger) == [*compensated_before_the_kill, "summary-start", "summary-end"]
    steps = await list_steps(backend, handle.id)
    assert [(s.step_name, s.status) for s in steps if s.step_name != "summary"] == [
        ("flight", "completed"),
        ("hotel", "completed"),
        ("car", "failed"),
        ("compensate-hotel", "completed"),
        ("compensate-flight", "completed"),
    ]
    assert second.process.returncode == 0, second.log()[-4000:]
