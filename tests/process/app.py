"""A worker process for the crash tests: ``python -m tests.process.app DB LEDGER``.

Each step appends a line to the LEDGER file (an oracle outside the engine), so
the tests can count how often each step body really ran. With
``OW_TEST_HANG_IN_STEP=1`` the second step hangs, waiting to be killed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from openworkflow import SqliteBackend, Step, Worker, workflow

LEDGER = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("ledger.txt")


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
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    await worker.start()
    record(f"worker-started {os.getpid()}")
    await stop_requested.wait()
    await worker.stop()
    await backend.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
