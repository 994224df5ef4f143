"""Real processes: a worker SIGKILLed while streaming, another finishes; readers see each item once.

The run streams the values 0..999 under one key, with a durable sleep before
value 400 (so its second pass replays the first 400 appends). The first
worker is killed once at least 600 items are stored; a second worker takes
the run over when the lease expires and replays up to where the first one
stopped. A reader in another process, started before any worker, and a late
reader in this process must both get exactly 0..999, each once, in order.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from openworkflow import OpenWorkflow
from openworkflow.core.streams import RunStreamExtent
from tests.fixtures.backends import backend_url
from tests.support.processes import WorkerProcess
from tests.support.stream_app import (
    ITEM_PREFIX,
    ITEMS,
    KEY,
    MIDWAY,
    PACE_VARIABLE,
    READER_DONE_MARKER,
    READER_READY_MARKER,
    READY_MARKER,
    stream_crash,
)
from tests.support.waiting import block_until, wait_until
from tests.worker.helpers import get_run, list_steps

pytestmark = pytest.mark.slow

KILL_AT = 600
"""The first worker is killed once the stream holds at least this many items."""
PACE_S = "0.005"
"""The first worker's pause after each item from MIDWAY on: 3 s for the rest of the stream."""


@pytest.fixture(params=["sqlite_file", "postgres"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    """Only backends another process can open (overrides the fixture of every kind)."""
    return str(request.param)


class StreamWorker(WorkerProcess):
    """``python -m tests.support.stream_app worker``, its backend named in the environment."""

    module = "tests.support.stream_app"
    ready_marker = READY_MARKER


class StreamReader(WorkerProcess):
    """``python -m tests.support.stream_app read RUN_ID``: the blocking reader, own process."""

    module = "tests.support.stream_app"
    ready_marker = READER_READY_MARKER


def _environment(url: str, namespace: str, **extra: str) -> dict[str, str]:
    return {"OW_TEST_BACKEND_URL": url, "OW_TEST_NAMESPACE": namespace, **extra}


def _items_read(reader: StreamReader) -> list[Any]:
    lines = reader.log().splitlines()
    return [json.loads(line[len(ITEM_PREFIX) :]) for line in lines if line.startswith(ITEM_PREFIX)]


async def _kill_mid_stream(backend: Any, run_id: str, worker: StreamWorker) -> RunStreamExtent:
    """SIGKILL ``worker`` once the stream holds KILL_AT items; the extent it left behind."""

    async def far_enough() -> bool:
        assert worker.is_alive(), f"the first worker died:\n{worker.log()[-4000:]}"
        extent = await backend.get_run_stream_extent(run_id, KEY)
        return bool(extent.count >= KILL_AT)

    try:
        await wait_until(far_enough, timeout=30, message=f"{KILL_AT} stored items")
        worker.signal(signal.SIGKILL)
        worker.process.wait(10)
    finally:
        worker.kill()
    extent: RunStreamExtent = await backend.get_run_stream_extent(run_id, KEY)
    return extent


async def test_readers_get_every_item_once_across_a_sigkill_mid_stream(
    backend: Any, backend_kind: str, tmp_path: Path
) -> None:
    url = backend_url(backend_kind, backend)
    assert url is not None
    namespace = backend.namespace_id
    ow = OpenWorkflow(backend)
    handle = await ow.run(stream_crash)

    reader = StreamReader(
        tmp_path / "reader.log", ["read", handle.id], _environment(url, namespace)
    )
    try:
        await asyncio.to_thread(block_until, reader.is_ready, "the reader to start", 30)
        first = StreamWorker(
            tmp_path / "first-worker.log",
            ["worker"],
            _environment(url, namespace, **{PACE_VARIABLE: PACE_S}),
        )
        at_kill = await _kill_mid_stream(backend, handle.id, first)
        # The kill landed after the replay and before the end, with no gap.
        assert MIDWAY < at_kill.count < ITEMS, first.log()[-4000:]
        assert at_kill.count == at_kill.last_seq
        # The other process's reader follows the run as it goes, not only once it ends.
        await asyncio.to_thread(
            block_until,
            lambda: len(_items_read(reader)) >= at_kill.count,
            "the reader to catch up with the stored items",
            30,
        )

        second = StreamWorker(
            tmp_path / "second-worker.log", ["worker"], _environment(url, namespace)
        )
        try:
            assert await handle.result(timeout="30s") == ITEMS
        finally:
            second.signal(signal.SIGTERM)
            second.process.wait(30)
        assert second.process.returncode == 0, second.log()[-4000:]

        await asyncio.to_thread(reader.process.wait, 30)
    finally:
        reader.kill()
    assert reader.process.returncode == 0, reader.log()[-4000:]
    assert READER_DONE_MARKER in reader.log()
    assert _items_read(reader) == list(range(ITEMS))

    late = [item async for item in handle.stream(KEY)]
    assert late == list(range(ITEMS))
    extent = await backend.get_run_stream_extent(handle.id, KEY)
    assert (extent.count, extent.last_seq) == (ITEMS, ITEMS)
    # Passes: the first, the one after the durable sleep (killed), the second worker's.
    assert (await get_run(backend, handle.id)).attempts >= 3
    assert [(s.step_name, s.status) for s in await list_steps(backend, handle.id)] == [
        ("midway", "completed")
    ]
