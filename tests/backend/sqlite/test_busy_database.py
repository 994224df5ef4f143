"""SQLite "database is locked": a lock held past the busy timeout is a passing fault.

A write that gives up waiting for another connection's lock raises
:class:`BackendUnavailableError` (naming the busy timeout), not a raw
``sqlite3.OperationalError``; a worker treats it like a database restart and
every run completes once the lock is released. The fault suite
(``tests/faults/test_sqlite_faults.py``, F17) does the same with several
processes.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from openworkflow import OpenWorkflow, SqliteBackend, Step, Worker, workflow
from openworkflow.errors import BackendUnavailableError


async def _slow() -> int:
    await asyncio.sleep(0.2)
    return 1


@workflow(name="busy-two-steps")
async def two_steps(step: Step) -> int:
    return int(await step.run("a", _slow)) + int(await step.run("b", _slow))


async def test_a_write_past_the_busy_timeout_is_backend_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    backend = SqliteBackend(str(path), busy_timeout_ms=50)
    ow = OpenWorkflow(backend)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        await ow.run(two_steps)  # the schema exists before the lock is taken
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(BackendUnavailableError, match=r"busy timeout \(50 ms\)"):
            await ow.run(two_steps)
        holder.execute("COMMIT")
        await ow.run(two_steps)  # the lock is gone: writes work again
        assert len((await ow.list_runs(limit=10)).data) == 2
    finally:
        holder.close()
        await backend.stop()


async def test_a_lock_held_past_the_busy_timeout_pauses_runs_without_failing_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="openworkflow")
    path = tmp_path / "locked.db"
    backend = SqliteBackend(str(path), busy_timeout_ms=100)
    ow = OpenWorkflow(backend)
    try:
        handles = [await ow.run(two_steps) for _ in range(3)]
        worker = Worker(
            backend, [two_steps], concurrency=3, lease_duration="3s", heartbeat_interval="1h"
        )
        async with worker:
            await asyncio.sleep(0.1)  # the runs are in their first step
            holder = sqlite3.connect(path, isolation_level=None)
            try:
                holder.execute("BEGIN IMMEDIATE")
                await asyncio.sleep(0.4)  # four busy timeouts: the steps' writes give up
                holder.execute("COMMIT")
            finally:
                holder.close()
            results = await asyncio.gather(
                *(handle.result(timeout="30s") for handle in handles), return_exceptions=True
            )
    finally:
        await backend.stop()
    assert results == [2, 2, 2], results
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors
