"""Wake-ups across processes for SQLite: watch ``PRAGMA data_version``.

SQLite has no LISTEN/NOTIFY. Every commit by another connection (another
process's worker or client, or this process's main connection) changes the
``data_version`` seen by a connection, and reading it touches no table, so a
small thread reads it, but only while a worker or a ``result()`` is waiting.
A change wakes the waiting workers (and a few ``result()`` waiters, see
:meth:`ChangeNotifier.notify_external_change`), which then check the database
as they would after a poll. Idle with nobody waiting, the thread sleeps on an
event and costs nothing.

How often it reads depends on who waits: every :data:`POLL_INTERVAL_S` for a
``result()``; for workers waiting for work, as often just after a change
(others are likely to follow) for :data:`BUSY_WINDOW_S` (with file events,
only :data:`LONE_CHANGE_WINDOW_S` after a lone change). Past that quiet
window (the idle phase), on Linux with the package ``inotify_simple``, the
thread sleeps until one of the database's files is written (see
:mod:`openworkflow.sqlite.file_events`), or at most
:data:`IDLE_FALLBACK_INTERVAL_S`, then reads: an idle worker costs about one
read a second, and hears of another process's first run as soon as it
commits. Without inotify it polls less and less often instead, down to every
:data:`IDLE_POLL_INTERVAL_S`: a fraction of a percent of a core, and a first
run heard of within that interval. (Timers need no wake-up from here: a
worker knows the due times of the runs it parks, see
:mod:`openworkflow.worker.idle`.)

A thread waking often costs a busy worker throughput (GIL and wake-ups), so
file events are read only in the idle phase; otherwise they queue, and are
drained (followed by a read) before the next idle wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time

from openworkflow.notifications import ChangeNotifier
from openworkflow.sqlite.file_events import FileEvents, Woken, open_file_events

POLL_INTERVAL_S = 0.002
"""How often ``data_version`` is read while someone waits (about 2-4 % of a core)."""

IDLE_POLL_INTERVAL_S = 0.05
"""Longest interval while only workers wait for work and nothing changed lately
(when no file events can be had: see :data:`IDLE_FALLBACK_INTERVAL_S`)."""

IDLE_FALLBACK_INTERVAL_S = 1.0
"""In the idle phase with file events, the longest wait for one before reading anyway:
in case an event is missed (a file system that reports no writes by other hosts,
as network ones; the database's directory renamed or removed)."""

BUSY_WINDOW_S = 0.1
"""After a change, workers waiting for work are served every :data:`POLL_INTERVAL_S`
this long; then the interval doubles per quiet read up to :data:`IDLE_POLL_INTERVAL_S`."""

LONE_CHANGE_WINDOW_S = 0.01
"""With file events, the busy window after a lone change (none in the
:data:`BURST_GAP_S` before it): an idle worker's own registration every few
seconds would otherwise cost 50 reads each. Changes in a burst get the full
:data:`BUSY_WINDOW_S`, and file events cover what the short window misses."""

BURST_GAP_S = 1.0
"""A change within this long of the one before is part of a burst."""

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
        self._events: FileEvents | None = None  # set by the thread while it runs
        self._window = BUSY_WINDOW_S  # the busy window after the last change

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
        self._interrupt()

    def stop(self) -> None:
        """Tell the thread to stop (it exits within one poll interval at most); see :meth:`join`."""
        self._stopped.set()
        self._wanted.set()
        self._interrupt()

    def join(self, timeout: float = 5.0) -> None:
        """After :meth:`stop`, wait for the thread to end (blocking: not on the event loop)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _interrupt(self) -> None:
        events = self._events
        if events is not None:  # closed meanwhile: interrupt() then does nothing
            events.interrupt()

    def _watch(self) -> None:
        try:
            connection = sqlite3.connect(self._path, check_same_thread=False)
        except sqlite3.Error:
            return  # polling still wakes the waiters
        events = open_file_events(self._path)
        self._events = events
        try:
            with contextlib.closing(connection):
                self._read_until_stopped(connection, events)
        finally:
            self._events = None
            if events is not None:
                events.close()

    def _read_until_stopped(
        self, connection: sqlite3.Connection, events: FileEvents | None
    ) -> None:
        last = self._version(connection)
        changed_at = read_at = last_change_at = time.monotonic()
        interval = POLL_INTERVAL_S
        drained = False  # file events drained before the last read: the queue holds all since
        while not self._stopped.is_set():
            if not self._notifier.has_waiters:
                drained = False
                self._wanted.clear()
                self._wanted.wait(1.0)
                continue
            quiet_for = time.monotonic() - changed_at
            idle = events if events is not None and self._is_idle(quiet_for) else None
            woken: Woken | None = None
            if idle is not None:
                if drained:
                    woken = idle.wait(read_at + IDLE_FALLBACK_INTERVAL_S - time.monotonic())
                    if woken == "wake":
                        continue  # someone new waits: see who; any write is still queued
                idle.drain()  # what is queued is older than the read below
            drained = idle is not None
            current = self._version(connection)
            read_at = time.monotonic()
            if current != last and current is not None:
                last = current
                if events is not None:
                    lone = read_at - last_change_at >= BURST_GAP_S
                    self._window = LONE_CHANGE_WINDOW_S if lone else BUSY_WINDOW_S
                changed_at = last_change_at = read_at
                self._notify()
            elif woken == "file":
                # A write with no commit to show yet: SQLite publishes a commit in
                # the WAL index (-shm, mapped memory, which sends no event) after
                # its last write to the WAL. Poll through the busy window, as after
                # a change, or that commit waits for the fallback read.
                changed_at = read_at
            if idle is None or changed_at == read_at:  # polling, or others may follow a change
                interval = self._pause(interval, read_at - changed_at)

    def _is_idle(self, quiet_for: float) -> bool:
        """Only workers wait for work, and nothing changed for a while: wait for file events."""
        notifier = self._notifier
        return (
            notifier.has_work_waiters
            and not notifier.has_prompt_run_waiters
            and quiet_for >= self._window
        )

    def _pause(self, interval: float, quiet_for: float) -> float:
        """Sleep until the next poll; the interval slept."""
        interval = self._next_interval(interval, quiet_for)
        if interval <= POLL_INTERVAL_S:
            self._stopped.wait(interval)
        else:  # someone starting to wait (wake()) cuts this short
            self._wanted.clear()
            self._wanted.wait(interval)
        return interval

    def _next_interval(self, interval: float, quiet_for: float) -> float:
        """The pause before the next read, given the last one and the time since a change."""
        notifier = self._notifier
        if notifier.has_prompt_run_waiters:
            return POLL_INTERVAL_S
        if not notifier.has_work_waiters:
            return PATIENT_POLL_INTERVAL_S
        if quiet_for < self._window:
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
