"""Cross-process wake-ups on SQLite: a commit by another connection wakes waiters."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from openworkflow import OpenWorkflow
from openworkflow.core.backend import CompleteWorkflowRunParams
from openworkflow.notifications import notifier_of
from openworkflow.sqlite import SqliteBackend
from tests.backend.helpers import claim

NEVER_S = 60.0  # a wait that only a wake-up can end within the test's time


def _commit_from_another_connection(path: Path) -> None:
    connection = sqlite3.connect(path)
    try:
        connection.execute("CREATE TABLE IF NOT EXISTS other_process (x INTEGER)")
        connection.execute("INSERT INTO other_process VALUES (1)")
        connection.commit()
    finally:
        connection.close()


async def test_a_commit_by_another_connection_wakes_a_waiting_worker(tmp_path: Path) -> None:
    path = tmp_path / "watched.db"
    backend = SqliteBackend(str(path))
    try:
        notifier = notifier_of(backend)
        assert notifier is not None
        waiting = asyncio.ensure_future(notifier.wait_for_work(NEVER_S))
        await asyncio.sleep(0.05)  # the watcher is polling now
        started = time.monotonic()
        await asyncio.to_thread(_commit_from_another_connection, path)
        await asyncio.wait_for(waiting, NEVER_S / 2)
        assert time.monotonic() - started < NEVER_S / 2  # woken, not timed out
    finally:
        await backend.stop()


async def test_a_commit_by_another_connection_wakes_a_result_waiter(tmp_path: Path) -> None:
    # At the notifier level: handle.result() would also poll, which hides a missing wake-up.
    path = tmp_path / "result.db"
    client_backend = SqliteBackend(str(path))
    other_backend = SqliteBackend(str(path))  # its own connection, as another process has
    try:
        handle = await OpenWorkflow(client_backend).run("finished-elsewhere", 1)
        notifier = notifier_of(client_backend)
        assert notifier is not None
        waiting = asyncio.ensure_future(notifier.wait_for_run(handle.id, NEVER_S))
        await asyncio.sleep(0.05)
        claimed = await claim(other_backend, "other-worker")
        assert claimed is not None and claimed.id == handle.id
        await other_backend.complete_workflow_run(
            CompleteWorkflowRunParams(
                workflow_run_id=handle.id, worker_id="other-worker", output="done"
            )
        )
        started = time.monotonic()
        await asyncio.wait_for(waiting, NEVER_S / 2)
        assert time.monotonic() - started < NEVER_S / 2  # woken, not timed out
        assert await handle.result(timeout="1s") == "done"
    finally:
        await client_backend.stop()
        await other_backend.stop()


async def test_the_watcher_thread_ends_with_the_backend(tmp_path: Path) -> None:
    backend = SqliteBackend(str(tmp_path / "ends.db"))
    notifier = notifier_of(backend)
    assert notifier is not None
    await notifier.wait_for_work(0.05)
    await backend.stop()
    await asyncio.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name == "openworkflow-sqlite-watch"]


async def test_lease_keepers_alone_do_not_ask_for_millisecond_polling(tmp_path: Path) -> None:
    """A pass's lease keeper watches its run patiently; a result() waiter does not."""
    backend = SqliteBackend(str(tmp_path / "patient.db"))
    try:
        notifier = notifier_of(backend)
        assert notifier is not None
        keeper = notifier.watch_run("run-a", patient=True)
        assert notifier.has_waiters and not notifier.wants_prompt_wakeups
        waiting = asyncio.ensure_future(notifier.wait_for_run("run-a", NEVER_S))
        await asyncio.sleep(0)
        assert notifier.wants_prompt_wakeups
        notifier.notify_runs_finished(["run-a"])  # both woken, and both forgotten
        await asyncio.wait_for(waiting, 1)
        assert keeper.done() and not notifier.wants_prompt_wakeups
        notifier.unwatch_run("run-a", keeper)  # after a wake-up: nothing left to forget
        assert not notifier.has_waiters and not notifier.wants_prompt_wakeups
        # A patient watcher still hears of another connection's commit (slower polling).
        keeper = notifier.watch_run("run-b", patient=True)
        await asyncio.sleep(0.05)
        await asyncio.to_thread(_commit_from_another_connection, tmp_path / "patient.db")
        await asyncio.wait_for(keeper, 5)
        notifier.unwatch_run("run-b", keeper)
        assert not notifier.wants_prompt_wakeups
    finally:
        await backend.stop()
