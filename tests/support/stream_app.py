"""The programs of the stream crash test: a worker, and a reader in a process of its own.

``python -m tests.support.stream_app worker``
    A worker of :func:`stream_crash` that prints ``ow-stream-ready pid=N``
    once it claims runs and stops gracefully on SIGTERM or SIGINT
    (:mod:`tests.support.processes`). With ``OW_TEST_STREAM_PACE_S`` set, it
    pauses that long after each item from :data:`MIDWAY` on, so a kill lands
    in the middle of the stream.

``python -m tests.support.stream_app read RUN_ID``
    Reads the run's stream :data:`KEY` with the blocking client
    (``SyncOpenWorkflow(url).handle(id).stream(key)``): prints
    ``ow-stream-reader-ready pid=N``, then ``item <JSON>`` for each item as it
    arrives, then ``ow-stream-reader-done`` once the run has ended.

The backend comes from the environment (``OW_TEST_BACKEND_URL``, a SQLite or
PostgreSQL URL, and ``OW_TEST_NAMESPACE``), so a PostgreSQL password never
shows in ``ps``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from openworkflow import Step, SyncOpenWorkflow, Worker, connect, workflow
from tests.support.processes import run_worker, stop_on_signals

READY_MARKER = "ow-stream-ready"
READER_READY_MARKER = "ow-stream-reader-ready"
READER_DONE_MARKER = "ow-stream-reader-done"
ITEM_PREFIX = "item "
PACE_VARIABLE = "OW_TEST_STREAM_PACE_S"

KEY = "numbers"
ITEMS = 1_000
"""Items the run streams: the values 0 to 999, in order."""
MIDWAY = 400
"""The run sleeps (durably) before writing this value, so the rest is written by a replay."""


@workflow(name="stream-crash")
async def stream_crash(step: Step) -> int:
    """Stream 0..999 under :data:`KEY`, with a durable sleep before :data:`MIDWAY`."""
    pace = float(os.environ.get(PACE_VARIABLE, "0"))
    for value in range(ITEMS):
        if value == MIDWAY:
            # Parks the run: the next pass replays the first MIDWAY appends,
            # which must not be written again.
            await step.sleep("midway", "100ms")
        await step.stream(KEY, value)
        if pace and value >= MIDWAY:
            # Plain pacing, not a durable wait: only the first worker sets it,
            # so that the test's SIGKILL lands while the stream is being written.
            await asyncio.sleep(pace)
    return ITEMS


def _environment() -> tuple[str, str]:
    return os.environ["OW_TEST_BACKEND_URL"], os.environ["OW_TEST_NAMESPACE"]


async def serve() -> None:
    """Run a worker of :func:`stream_crash` until SIGTERM or SIGINT."""
    url, namespace = _environment()
    backend = connect(url, namespace_id=namespace)
    worker = Worker(backend, [stream_crash], concurrency=2, lease_duration="1s")
    stop_requested = stop_on_signals()
    await run_worker(worker, stop_requested, READY_MARKER)
    await backend.stop()


def read(run_id: str) -> None:
    """Print every item of the run's stream, one line each, as the blocking client yields it."""
    url, namespace = _environment()
    with SyncOpenWorkflow(url, namespace_id=namespace) as client:
        handle = client.handle(run_id)
        print(f"{READER_READY_MARKER} pid={os.getpid()}", flush=True)
        for item in handle.stream(KEY):
            print(ITEM_PREFIX + json.dumps(item), flush=True)
    print(READER_DONE_MARKER, flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["read"]:
        read(sys.argv[2])
    else:
        asyncio.run(serve())
