"""The worker program of the crash test: ``python -m tests.support.crash_app DB LEDGER``.

Each step appends a line to the LEDGER file (an oracle outside the engine), so
the tests can count how often each step body really ran. With
``OW_TEST_HANG_IN_STEP=1`` the second step hangs, waiting to be killed. It
prints ``ow-crash-ready pid=N`` once it claims runs and stops gracefully on
SIGTERM or SIGINT (:mod:`tests.support.processes`).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from openworkflow import SqliteBackend, Step, Worker, workflow
from tests.support.processes import run_worker, stop_on_signals

LEDGER = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("ledger.txt")
READY_MARKER = "ow-crash-ready"


def record(entry: str) -> str:
    with LEDGER.open("a", encoding="utf-8") as ledger:
        ledger.write(entry + "\n")
        ledger.flush()
        os.fsync(ledger.fileno())
    return entry


def slow_step() -> str:
    record("two-start")
    if os.environ.get("OW_TEST_HANG_IN_STEP") == "1":
        time.sleep(300)
    return record("two-end")


@workflow
async def crash_test(step: Step) -> list[str]:
    one = await step.run("one", lambda: record("one"))
    two = await step.run("two", slow_step)
    three = await step.run("three", lambda: record("three"))
    return [one, two, three]


async def main(database: str) -> None:
    backend = SqliteBackend(database)
    worker = Worker(backend, [crash_test], concurrency=2, lease_duration="1s")
    stop_requested = stop_on_signals()
    record(f"worker-started {os.getpid()}")
    await run_worker(worker, stop_requested, READY_MARKER)
    await backend.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
