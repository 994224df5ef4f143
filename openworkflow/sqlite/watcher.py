"""Wake-ups across processes for SQLite: watch ``PRAGMA data_version``.

SQLite has no LISTEN/NOTIFY. Every commit by another connection (another
process's worker or client, or this process's main connection) changes the
``data_version`` seen by a connection, and reading it touches no table, so a
small thread polls it every few milliseconds, but only while a worker or a
``result()`` is waiting. A change wakes the waiting workers (and a few
``result()`` waiters, see :meth:`ChangeNotifier.notify_external_change`),
which then check the database as they would after a poll. Idle with nobody waiting, the thread
sleeps on an event and costs nothing.

How often it reads depends on who waits: every :data:`POLL_INTERVAL_S` for a
``result()``; for workers waiting for work, as often just after a change
(others are likely to follow), then less and less often, down to every
:data:`IDLE_POLL_INTERVAL_S` while nothing changes: a worker idle for long
costs a fraction of a percent of a core, not 2-4 %, and hears of another
process's first run within that interval. (Timers need no wake-up from here:
a worker knows the due times of the runs it parks, see
:mod:`openworkflow.worker.idle`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time

from openworkflow.notifications import ChangeNotifier

POLL_INTERVAL_S = 0.002
"""How often ``data_version`` is read while someone waits (about 2-4 % of a core)."""

IDLE_POLL_INTERVAL_S = 0.05
"""Longest interval while only workers wait for work and nothing changed lately."""

BUSY_WINDOW_S = 0.1
"""After a change, workers waiting for work are served every :data:`POLL_INTERVAL_S`
this long; then the interval doubles per quiet read up to :data:`IDLE_POLL_INTERVAL_S`."""

PATIENT_POLL_INTERVAL_S = 0.1
"""How often while only lease keepers watch their runs for a cancel: they read a
run at most every 200 ms anyway, and a thread waking every 2 ms while passes
run cost the worker about a tenth of its throughput (GIL and wake-ups)."""


class DataVersionWatcher:
    """One thread with its own read-only connection, feeding a :class:`ChangeNotifier`."""

    def __init__(self, path: str, notifier: ChangeNotifier) -> None:
        self._path = path
        self._notifier = notifier
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._wanted = threading.Event()
        self._stopped = threading.Event()

    def wake(self) -> None:
        """Someone started waiting: make sure the thread runs and polls (event loop only)."""
        if self._stopped.is_set():
            return
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(
                target=self._watch, name="openworkflow-sqlite-watch", daemon=True
            )
            self._thread.start()
        self._wanted.set()

    def stop(self) -> None:
        """Tell the thread to stop (it exits within one poll interval); see :meth:`join`."""
        self._stopped.set()
        self._wanted.set()

    def join(self, timeout: float = 5.0) -> None:
        """After :meth:`stop`, wait for the thread to end (blocking: not on the event loop)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _watch(self) -> None:
        try:
            connection = sqlite3.connect(self._path, check_same_thread=False)
        except sqlite3.Error:
            return  # polling still wakes the waiters
        with contextlib.closing(connection):
            last = self._version(connection)
            changed_at = time.monotonic()
            interval = POLL_INTERVAL_S
            while not self._stopped.is_set():
                if not self._notifier.has_waiters:
                    self._wanted.clear()
                    self._wanted.wait(1.0)
                    continue
                current = self._version(connection)
                if current != last and current is not None:
                    last = current
                    changed_at = time.monotonic()
                    self._notify()
                interval = self._next_interval(interval, time.monotonic() - changed_at)
                if interval <= POLL_INTERVAL_S:
                    self._stopped.wait(interval)
                else:  # someone starting to wait (wake()) cuts this short
                    self._wanted.clear()
                    self._wanted.wait(interval)

    def _next_interval(self, interval: float, quiet_for: float) -> float:
        """The pause before the next read, given the last one and the time since a change."""
        notifier = self._notifier
        if notifier.has_prompt_run_waiters:
            return POLL_INTERVAL_S
        if not notifier.has_work_waiters:
            return PATIENT_POLL_INTERVAL_S
        if quiet_for < BUSY_WINDOW_S:
            return POLL_INTERVAL_S
        return min(IDLE_POLL_INTERVAL_S, max(interval, POLL_INTERVAL_S) * 2)

    @staticmethod
    def _version(connection: sqlite3.Connection) -> int | None:
        try:
            row = connection.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error:
            return None
        return None if row is None else int(row[0])

    def _notify(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._notifier.notify_external_change)
