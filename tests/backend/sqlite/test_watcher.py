"""Cross-process wake-ups on SQLite: a commit by another connection wakes waiters."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from openworkflow import OpenWorkflow
from openworkflow.core.backend import CompleteWorkflowRunParams
from openworkflow.notifications import ChangeNotifier, notifier_of
from openworkflow.sqlite import SqliteBackend, file_events, watcher
from tests.backend.helpers import claim

NEVER_S = 60.0  # a wait that only a wake-up can end within the test's time


@contextlib.asynccontextmanager
async def _watched(path: Path | str) -> AsyncIterator[ChangeNotifier]:
    """The notifier of a SQLite backend on ``path`` (its watcher's), stopped afterwards."""
    backend = SqliteBackend(str(path))
    try:
        notifier = notifier_of(backend)
        assert notifier is not None
        yield notifier
    finally:
        await backend.stop()


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
    async with _watched(path) as notifier:
        waiting = asyncio.ensure_future(notifier.wait_for_work(NEVER_S))
        await asyncio.sleep(0.05)  # the watcher is polling now
        started = time.monotonic()
        await asyncio.to_thread(_commit_from_another_connection, path)
        await asyncio.wait_for(waiting, NEVER_S / 2)
        assert time.monotonic() - started < NEVER_S / 2  # woken, not timed out


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
    async with _watched(tmp_path / "patient.db") as notifier:
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


# Idle phase: file events (inotify) instead of timed polls.

_COMMIT_IN_A_PROCESS = (
    "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
    "c.execute('CREATE TABLE IF NOT EXISTS other_process (x INTEGER)'); "
    "c.execute('INSERT INTO other_process VALUES (1)'); c.commit(); c.close()"
)


def _commit_from_another_process(path: Path) -> None:
    subprocess.run([sys.executable, "-c", _COMMIT_IN_A_PROCESS, str(path)], check=True)


def _inotify_available() -> bool:
    try:
        inotify_simple = importlib.import_module("inotify_simple")
        inotify_simple.INotify().close()
    except (ImportError, OSError):
        return False
    return True


needs_inotify = pytest.mark.skipif(not _inotify_available(), reason="no inotify here")


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The times the watcher read ``data_version``."""
    times: list[float] = []
    read = watcher.DataVersionWatcher._version

    def counted(connection: sqlite3.Connection) -> int | None:
        times.append(time.monotonic())
        return read(connection)

    monkeypatch.setattr(watcher.DataVersionWatcher, "_version", staticmethod(counted))
    yield times


def _reads_over(reads: list[float], seconds: float) -> int:
    return sum(1 for at in reads if at >= time.monotonic() - seconds)


def _watch_thread_alive() -> bool:
    return any(t.name == "openworkflow-sqlite-watch" for t in threading.enumerate())


@needs_inotify
async def test_an_idle_worker_s_watcher_sleeps_till_another_process_commits(
    tmp_path: Path, reads: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No fallback read within the test: only the file event can end the wait.
    monkeypatch.setattr(watcher, "IDLE_FALLBACK_INTERVAL_S", NEVER_S)
    monkeypatch.chdir(tmp_path)  # a relative path is watched too
    path = Path("idle.db")
    backend = SqliteBackend(str(path))
    try:
        notifier = notifier_of(backend)
        assert notifier is not None
        waiting = asyncio.ensure_future(notifier.wait_for_work(NEVER_S))
        await asyncio.sleep(watcher.BUSY_WINDOW_S + 0.2)  # idle-waiting now
        await asyncio.sleep(1.0)
        assert _reads_over(reads, 1.0) <= 3  # polling would read ~20 times
        await asyncio.to_thread(_commit_from_another_process, path)
        await asyncio.wait_for(waiting, NEVER_S / 2)
        # Stopping interrupts the idle wait (no fallback read to wait for).
        waiting = asyncio.ensure_future(notifier.wait_for_work(NEVER_S))
        await asyncio.sleep(watcher.BUSY_WINDOW_S + 0.3)  # idle-waiting again
        assert _reads_over(reads, 0.2) == 0
        stopping = time.monotonic()
        await backend.stop()
        while _watch_thread_alive() and time.monotonic() - stopping < 2.0:
            await asyncio.sleep(0.01)
        assert not _watch_thread_alive()
        waiting.cancel()
    finally:
        await backend.stop()


@needs_inotify
async def test_a_result_waiter_ends_the_idle_wait_and_is_polled_for(
    tmp_path: Path, reads: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watcher, "IDLE_FALLBACK_INTERVAL_S", NEVER_S)
    async with _watched(tmp_path / "prompt.db") as notifier:
        work = asyncio.ensure_future(notifier.wait_for_work(NEVER_S))
        await asyncio.sleep(watcher.BUSY_WINDOW_S + 0.3)  # idle-waiting now
        assert _reads_over(reads, 0.2) == 0
        run = asyncio.ensure_future(notifier.wait_for_run("run-a", NEVER_S))
        await asyncio.sleep(0.3)
        assert _reads_over(reads, 0.3) >= 10  # every POLL_INTERVAL_S again
        run.cancel()
        work.cancel()


@needs_inotify
def test_file_events_are_the_database_s_own(tmp_path: Path) -> None:
    events = file_events.open_file_events(str(tmp_path / "own.db"))
    assert events is not None
    try:
        (tmp_path / "unrelated.txt").write_text("x")
        (tmp_path / "own.db-shm").write_text("x")
        assert events.wait(0.3) == "timeout"
        (tmp_path / "own.db-wal").write_text("x")
        assert events.wait(NEVER_S) == "file"
        (tmp_path / "own.db").write_text("x")
        events.drain()  # stale: forgotten
        events.interrupt()
        assert events.wait(NEVER_S) == "wake"
        assert events.wait(0.1) == "timeout"
    finally:
        events.close()
    events.interrupt()  # after close: nothing, no error


def test_an_in_memory_database_has_no_file_events() -> None:
    assert file_events.open_file_events(":memory:") is None
    assert file_events.open_file_events("file::memory:?cache=shared") is None


async def test_without_inotify_an_idle_worker_s_watcher_polls(
    tmp_path: Path, reads: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "inotify_simple", None)  # the import fails
    path = tmp_path / "polled.db"
    async with _watched(path) as notifier:
        waiting = asyncio.ensure_future(notifier.wait_for_work(NEVER_S))
        await asyncio.sleep(watcher.BUSY_WINDOW_S + 0.3)
        await asyncio.sleep(1.0)
        # Every IDLE_POLL_INTERVAL_S, as before inotify.
        assert _reads_over(reads, 1.0) >= 0.5 / watcher.IDLE_POLL_INTERVAL_S
        await asyncio.to_thread(_commit_from_another_process, path)
        await asyncio.wait_for(waiting, NEVER_S / 2)


@needs_inotify
async def test_a_commit_published_after_its_last_file_write_is_still_heard_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite publishes a commit in the WAL index (-shm, written through mapped
    # memory: no inotify event) after its last write to the WAL. An idle watcher
    # woken by that write could read data_version a moment too early, then wait
    # for the next event: a pickup 150-400 ms late, 1 in 20 (benchmark). Here
    # data_version is played by hand: a write to -wal with no change, then the
    # change with no write. Only reading on after the write can see it.
    monkeypatch.setattr(watcher, "IDLE_FALLBACK_INTERVAL_S", NEVER_S)
    path = tmp_path / "published.db"
    _commit_from_another_connection(path)  # a real database for the watcher's connection
    version = [1]
    monkeypatch.setattr(
        watcher.DataVersionWatcher, "_version", staticmethod(lambda connection: version[0])
    )
    notifier = ChangeNotifier()
    watching = watcher.DataVersionWatcher(str(path), notifier)
    try:
        waiting = asyncio.ensure_future(notifier.wait_for_work(NEVER_S))
        await asyncio.sleep(0)
        watching.wake()
        await asyncio.sleep(watcher.BUSY_WINDOW_S + 0.3)  # idle-waiting for file events now
        with (tmp_path / "published.db-wal").open("ab") as wal:
            wal.write(b"frames of a commit")
        await asyncio.sleep(0.02)  # the watcher has read the old version by now
        version[0] = 2  # the commit shows, with no file event
        await asyncio.wait_for(waiting, 1.0)
    finally:
        watching.stop()
        await asyncio.to_thread(watching.join)


@needs_inotify
async def test_a_lone_commit_costs_an_idle_watcher_a_few_reads(
    tmp_path: Path, reads: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An idle worker's own registration commits every few seconds; after each,
    # 100 ms of reads every 2 ms (the busy window) were most of its idle reads.
    monkeypatch.setattr(watcher, "IDLE_FALLBACK_INTERVAL_S", NEVER_S)
    path = tmp_path / "lone.db"
    async with _watched(path) as notifier:
        waiting = asyncio.ensure_future(notifier.wait_for_work(NEVER_S))
        await asyncio.sleep(watcher.BURST_GAP_S + 0.2)  # idle, and no change for a while
        started = len(reads)
        await asyncio.to_thread(_commit_from_another_connection, path)
        await asyncio.wait_for(waiting, NEVER_S / 2)
        waiting = asyncio.ensure_future(notifier.wait_for_work(NEVER_S))
        await asyncio.sleep(0.3)
        assert len(reads) - started <= 12, "polled through the whole busy window"
        # A second change soon after: a burst, served every POLL_INTERVAL_S again.
        await asyncio.to_thread(_commit_from_another_connection, path)
        await asyncio.wait_for(waiting, NEVER_S / 2)
        waiting.cancel()
