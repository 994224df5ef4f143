"""The worker program of the saga crash test: ``python -m tests.support.saga_app LEDGER``.

The backend comes from the environment (``OW_TEST_BACKEND_URL``, a SQLite or
PostgreSQL URL, and ``OW_TEST_NAMESPACE``), so a PostgreSQL password never
shows in ``ps``. Each step body appends a line to the LEDGER file (an oracle
outside the engine), so the test can count how often each body really ran.
With ``OW_TEST_HANG_AFTER_COMPENSATION=1`` the step after the compensations
hangs, waiting to be killed. It prints ``ow-saga-ready pid=N`` once it claims
runs and stops gracefully on SIGTERM or SIGINT (:mod:`tests.support.processes`).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from openworkflow import Step, Worker, connect, workflow
from openworkflow.saga import Saga
from tests.support.processes import run_worker, stop_on_signals
from workflows.trip_booking import NoCarsAvailable

READY_MARKER = "ow-saga-ready"


def record(entry: str) -> str:
    """Append ``entry`` to the ledger (durably: the next line may be a SIGKILL)."""
    with Path(sys.argv[1]).open("a", encoding="utf-8") as ledger:
        ledger.write(entry + "\n")
        ledger.flush()
        os.fsync(ledger.fileno())
    return entry


def book(what: str) -> str:
    return record(f"book-{what}")


def cancel(booking: str) -> str:
    return record(f"cancel {booking}")


def rent_car() -> str:
    record("book-car")
    raise NoCarsAvailable("no cars available")


def send_summary() -> str:
    record("summary-start")
    if os.environ.get("OW_TEST_HANG_AFTER_COMPENSATION") == "1":
        time.sleep(300)
    return record("summary-end")


@workflow(name="saga-crash")
async def saga_crash(step: Step) -> dict[str, Any]:
    saga = Saga(step)
    try:
        async with saga:
            await saga.run("flight", book, "flight", compensate=cancel)
            await saga.run("hotel", book, "hotel", compensate=cancel)
            await saga.run("car", rent_car, compensate=cancel)
        status = "booked"
    except NoCarsAvailable:
        status = "compensated"
    # The first worker is killed in here, after the compensations ran.
    await step.run("summary", send_summary)
    return {"status": status, "compensated": saga.compensated}


async def main() -> None:
    backend = connect(
        os.environ["OW_TEST_BACKEND_URL"], namespace_id=os.environ["OW_TEST_NAMESPACE"]
    )
    worker = Worker(backend, [saga_crash], concurrency=2, lease_duration="1s")
    stop_requested = stop_on_signals()
    await run_worker(worker, stop_requested, READY_MARKER)
    await backend.stop()


if __name__ == "__main__":
    asyncio.run(main())
