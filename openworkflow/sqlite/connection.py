"""The SQLite connection: one sqlite3 connection on its own thread, and transactions.

The event loop never waits on SQLite: every call runs on the connection's
dedicated thread. The database runs in WAL mode with a busy timeout, and every
transaction that writes after reading starts with ``BEGIN IMMEDIATE`` so that
several processes sharing a file queue for the lock instead of failing with
"database is locked".
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from openworkflow.errors import (
    BackendClosedError,
    BackendError,
    BackendUnavailableError,
    DatabaseNotFoundError,
)
from openworkflow.notifications import ChangeNotifier
from openworkflow.sqlite.schema import migrate
from openworkflow.sqlite.watcher import DataVersionWatcher

T = TypeVar("T")
Item = TypeVar("Item")

PAGE_CACHE_KIB = 32 * 1024
"""SQLite page cache per connection, in KiB (the default is 2 MiB)."""


class Database:
    """One sqlite3 connection, used only from its own thread."""

    def __init__(
        self, path: str, busy_timeout_ms: int, run_migrations: bool, create: bool = True
    ) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="openworkflow-sqlite")
        self._connection: sqlite3.Connection | None = None
        self._users = 1
        self.closed = False
        self.notifier = ChangeNotifier()
        self._watcher: DataVersionWatcher | None = None
        if path != ":memory:":
            self._watcher = DataVersionWatcher(path, self.notifier)
            self.notifier.on_wait = self._watcher.wake
        try:
            self._executor.submit(self._open, busy_timeout_ms, run_migrations, create).result()
        except Exception as error:
            self._executor.shutdown(wait=True)  # its one job is over: returns at once
            if self._watcher is not None:
                self._watcher.stop()
            if isinstance(error, DatabaseNotFoundError):
                raise
            raise BackendError(
                f"SQLite backend failed to open database {path!r}: {error}. "
                "Check the path is valid and writable."
            ) from error

    def _open(self, busy_timeout_ms: int, run_migrations: bool, create: bool) -> None:
        connection = _connect(self.path, busy_timeout_ms, create)
        try:
            connection.row_factory = sqlite3.Row
            if self.path != ":memory:":
                _enable_wal(connection, busy_timeout_ms)
                # WAL keeps commits durable with one fsync at checkpoints; NORMAL
                # is the documented pairing and cannot corrupt the database.
                connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute("PRAGMA foreign_keys = ON")
            # A larger page cache than the 2 MiB default keeps a busy queue's
            # indexes in memory (the cache grows only as pages are read).
            connection.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
            if run_migrations:
                migrate(connection)
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the database thread."""
        if self.closed:
            raise BackendClosedError("the SQLite backend was stopped; create a new one")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._connection is None:
            raise BackendClosedError("the SQLite backend was stopped; create a new one")
        try:
            return fn(self._connection)
        except sqlite3.OperationalError as error:
            if is_busy(error):
                # Another process held the write lock past the busy timeout: a
                # passing fault (the pass is handed back and retried), not a
                # workflow failure.
                raise BackendUnavailableError(
                    f"SQLite database {self.path!r} is busy: {error}. Another process held "
                    f"its write lock longer than the busy timeout ({self._busy_timeout_ms} ms)."
                ) from error
            if is_disk_full(error):
                # A full disk refuses writes until space is freed: like a lost
                # connection, the worker backs off and hands passes back.
                raise BackendUnavailableError(
                    f"SQLite database {self.path!r} cannot grow: the database or disk is full "
                    f"({error}). Free disk space (or raise max_page_count); writes resume "
                    "once there is room, and nothing already committed is lost."
                ) from error
            raise

    def share(self) -> Database:
        """Count one more backend using this connection (another namespace)."""
        self._users += 1
        return self

    async def release(self) -> None:
        """Drop one user; the last one closes the connection and ends its thread."""
        self._users -= 1
        if self._users > 0 or self.closed:
            return
        self.closed = True
        if self._watcher is not None:
            self._watcher.stop()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        # Its last job is done, so its thread ends at once: no thread outlives stop().
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._watcher is not None:
            self._watcher.join()
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _connect(path: str, busy_timeout_ms: int, create: bool) -> sqlite3.Connection:
    """Open the file; without ``create``, a missing file is an error, not a new database."""
    target, uri = path, False
    if not create and path != ":memory:":
        # mode=rw opens an existing file read-write and never creates one.
        target, uri = Path(path).resolve().as_uri() + "?mode=rw", True
    try:
        return sqlite3.connect(
            target,
            timeout=busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
            uri=uri,
        )
    except sqlite3.OperationalError:
        resolved = Path(path).resolve()
        if not create and not resolved.exists():
            raise DatabaseNotFoundError(str(resolved)) from None
        raise


def transaction(connection: sqlite3.Connection, body: Callable[[], T]) -> T:
    """Run ``body`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolling back on error."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        result = body()
    except BaseException:
        # The original error matters more than a failed rollback.
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
        raise
    try:
        connection.execute("COMMIT")
    except BaseException:
        # A refused COMMIT (a full disk) may leave the transaction open: end it,
        # so the next write does not run inside this one.
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
        raise
    return result


def write_each(
    connection: sqlite3.Connection,
    items: Sequence[Item],
    write: Callable[[sqlite3.Connection, Item], T],
    finish: Callable[[list[T | BaseException]], None] | None = None,
) -> list[T | BaseException]:
    """Write ``items`` in one transaction, each in its own savepoint.

    An item that fails (its fence refused it, or SQLite raised) is rolled back
    alone and its error returned in its place; the others commit together.
    ``finish(outcomes)`` runs last, in the same transaction.
    """

    def body() -> list[T | BaseException]:
        outcomes: list[T | BaseException] = []
        for item in items:
            connection.execute("SAVEPOINT ow_item")
            try:
                outcomes.append(write(connection, item))
            except Exception as error:  # this item's fault only: undo it alone
                if isinstance(error, sqlite3.OperationalError) and is_disk_full(error):
                    raise  # the database's fault, not the item's: no item is written
                connection.execute("ROLLBACK TO ow_item")
                outcomes.append(error)
            connection.execute("RELEASE ow_item")
        if finish is not None:
            finish(outcomes)
        return outcomes

    return transaction(connection, body)


def _enable_wal(connection: sqlite3.Connection, busy_timeout_ms: int) -> None:
    """Switch to WAL, retrying while another process holds the fresh file's lock.

    Changing the journal mode needs an exclusive lock and SQLite does not always
    wait for it with the busy handler (several processes opening one new file
    at once get "database is locked" at once), so wait here, up to the timeout.
    """
    deadline = time.monotonic() + busy_timeout_ms / 1000
    delay = 0.005
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if not is_busy(error) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def is_busy(error: sqlite3.OperationalError) -> bool:
    """Whether SQLite gave up waiting for another connection's lock."""
    name = getattr(error, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in str(error)


def is_disk_full(error: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused a write for want of space (the disk, or ``max_page_count``)."""
    name = getattr(error, "sqlite_errorname", "") or ""
    return name.startswith("SQLITE_FULL") or "database or disk is full" in str(error)
