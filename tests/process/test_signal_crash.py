"""Real processes: signals to one run across a SIGKILLed worker and a second worker.

The run takes six signals one by one and handles each in a step. Signals
are sent before any worker runs, to a worker that is alive, to one hanging in
the step after a consumed signal, while no worker is alive at all (with two
resends of already-sent idempotency keys), and to the second worker. Each
must reach the run exactly once, in the order sent.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from openworkflow import OpenWorkflow, RunHandle
from tests.fixtures.backends import backend_url
from tests.support.processes import WorkerProcess
from tests.support.signal_app import HANG_VARIABLE, READY_MARKER, signal_crash
from tests.support.waiting import block_until
from tests.worker.helpers import (
    attempts_named,
    list_steps,
    wait_for_parked,
    wait_for_running_step,
)

pytestmark = pytest.mark.slow

COUNT = 6
"""Signals the run takes."""

HANG_AT = 2
"""The first worker hangs (and is killed) in the step after this signal."""


@pytest.fixture(params=["sqlite_file", "postgres"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    """Only backends another process can open (overrides the fixture of every kind)."""
    return str(request.param)


class SignalWorker(WorkerProcess):
    """``python -m tests.support.signal_app LEDGER``, its backend named in the environment."""

    module = "tests.support.signal_app"
    ready_marker = READY_MARKER


def _start_worker(url: str, namespace: str, ledger: Path, *, hang: bool) -> SignalWorker:
    log = ledger.with_name("hanging-worker.log" if hang else "worker.log")
    env = {"OW_TEST_BACKEND_URL": url, "OW_TEST_NAMESPACE": namespace}
    if hang:
        env[HANG_VARIABLE] = str(HANG_AT)
    return SignalWorker(log, [str(ledger)], env)


def _ledger(ledger: Path) -> list[str]:
    return ledger.read_text().splitlines() if ledger.exists() else []


async def _wait_for_ledger(ledger: Path, entry: str) -> None:
    await asyncio.to_thread(
        block_until, lambda: entry in _ledger(ledger), f"ledger line {entry!r}", 30, interval=0.02
    )


def _item(index: int) -> dict[str, Any]:
    return {"n": index}


async def _send(handle: RunHandle, index: int, **extra: Any) -> None:
    await handle.signal("item", {**_item(index), **extra}, idempotency_key=f"k{index}")


async def _kill_in_the_hanging_step(
    handle: RunHandle, backend: Any, url: str, ledger: Path
) -> list[str]:
    """Run the first worker until it hangs after signal ``HANG_AT``; SIGKILL it; its ledger."""
    first = _start_worker(url, backend.namespace_id, ledger, hang=True)
    try:
        await _wait_for_ledger(ledger, "after-1-end")
        await wait_for_parked(backend, handle.id)  # in the wait for item-2, nothing buffered
        await _send(handle, 2)  # wakes the parked run in the other process
        await _wait_for_ledger(ledger, f"after-{HANG_AT}-start {json.dumps(_item(HANG_AT))}")
        await wait_for_running_step(backend, handle.id, f"after-{HANG_AT}")
        await _send(handle, 3)  # kept while the worker hangs
        first.signal(signal.SIGKILL)
        first.process.wait(10)
    finally:
        first.kill()
    return _ledger(ledger)


async def test_signals_reach_the_run_once_in_order_across_a_sigkill(
    backend: Any, backend_kind: str, tmp_path: Path
) -> None:
    url = backend_url(backend_kind, backend)
    assert url is not None
    ledger = tmp_path / "ledger.txt"
    handle = await OpenWorkflow(backend).run(signal_crash, COUNT)
    await _send(handle, 0)  # no worker yet: kept
    await _send(handle, 1)

    before_the_kill = await _kill_in_the_hanging_step(handle, backend, url, ledger)

    # No worker alive: a new signal is kept, resends of consumed or kept keys are no-ops.
    await _send(handle, 4)
    await _send(handle, 1, resend=True)
    await _send(handle, 3, resend=True)
    second = _start_worker(url, backend.namespace_id, ledger, hang=False)
    try:
        await asyncio.to_thread(block_until, second.is_ready, "the second worker", 30)
        await _send(handle, 5)
        output = await handle.result(timeout="30s")
    finally:
        second.signal(signal.SIGTERM)
        second.process.wait(30)

    assert output == [_item(index) for index in range(COUNT)]
    handled = [f"after-{i}-{when}" for i in range(HANG_AT) for when in ("start", "end")]
    assert [line.split(" ")[0] for line in before_the_kill] == [*handled, "after-2-start"]
    # Only the step cut short by the kill ran again; each body saw its own signal.
    after_the_kill = _ledger(ledger)[len(before_the_kill) :]
    assert after_the_kill == [
        *(f"after-2-start {json.dumps(_item(2))}", "after-2-end"),
        *(
            line
            for i in range(3, COUNT)
            for line in (f"after-{i}-start {json.dumps(_item(i))}", f"after-{i}-end")
        ),
    ]
    steps = await list_steps(backend, handle.id)
    for index in range(COUNT):
        waits = attempts_named(steps, f"item-{index}")
        assert [(w.status, w.output) for w in waits] == [("completed", {"data": _item(index)})]
    assert second.process.returncode == 0, second.log()[-4000:]
