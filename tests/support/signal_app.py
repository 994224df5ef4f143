"""The worker program of the signal crash test: ``python -m tests.support.signal_app LEDGER``.

The backend comes from the environment (``OW_TEST_BACKEND_URL``, a SQLite or
PostgreSQL URL, and ``OW_TEST_NAMESPACE``), so a PostgreSQL password never
shows in ``ps``. The workflow takes its signals one by one; after each it runs
a step whose body appends a line to the LEDGER file (an oracle outside the
engine). With ``OW_TEST_HANG_AT_ITEM=N`` the step after the N-th signal
hangs, waiting to be killed. It prints ``ow-signal-ready pid=N`` once it
claims runs and stops gracefully on SIGTERM or SIGINT
(:mod:`tests.support.processes`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from openworkflow import Step, Worker, connect, workflow
from tests.support.processes import run_worker, stop_on_signals

READY_MARKER = "ow-signal-ready"

HANG_VARIABLE = "OW_TEST_HANG_AT_ITEM"
"""The index of the signal after which this worker's step hangs (unset: none hangs)."""


def record(entry: str) -> str:
    """Append ``entry`` to the ledger (durably: the next line may be a SIGKILL)."""
    with Path(sys.argv[1]).open("a", encoding="utf-8") as ledger:
        ledger.write(entry + "\n")
        ledger.flush()
        os.fsync(ledger.fileno())
    return entry


def handle_item(index: int, data: Any) -> str:
    """The work done with one signal's payload; hangs where the environment says."""
    record(f"after-{index}-start {json.dumps(data, sort_keys=True)}")
    if os.environ.get(HANG_VARIABLE) == str(index):
        time.sleep(300)
    return record(f"after-{index}-end")


@workflow(name="signal-crash")
async def signal_crash(input: int, step: Step) -> list[Any]:
    """Take ``input`` signals named ``item`` in turn, handling each before the next wait."""
    received: list[Any] = []
    for index in range(input):
        got = await step.wait_for_signal("item", name=f"item-{index}", timeout="1h")
        data = None if got is None else got["data"]
        received.append(data)
        # The first worker is killed in here, after some signals were consumed.
        await step.run(f"after-{index}", handle_item, index, data)
    return received


async def main() -> None:
    backend = connect(
        os.environ["OW_TEST_BACKEND_URL"], namespace_id=os.environ["OW_TEST_NAMESPACE"]
    )
    worker = Worker(backend, [signal_crash], concurrency=2, lease_duration="1s")
    stop_requested = stop_on_signals()
    await run_worker(worker, stop_requested, READY_MARKER)
    await backend.stop()


if __name__ == "__main__":
    asyncio.run(main())
