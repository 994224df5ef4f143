"""Linux only: hear of writes to a SQLite database's files through inotify.

The :mod:`watcher <openworkflow.sqlite.watcher>` reads ``PRAGMA data_version``
to learn of other processes' commits. While a worker waits idle for work, it
would rather sleep until one of the database's files is written than read on a
timer: :class:`FileEvents` watches the directory of the database for writes to
the file itself, its ``-wal`` and its ``-journal``, and lets the thread wait for
one of them, or for :meth:`FileEvents.interrupt` (someone new waits, or the
backend stops).

It uses the optional package ``inotify_simple``, imported when first needed:
without it, off Linux, for an in-memory database, or when inotify refuses
(``fs.inotify.max_user_instances`` reached, say), :func:`open_file_events`
returns ``None`` and the watcher polls as it always did.

The inotify descriptor is read only in :meth:`FileEvents.wait` and
:meth:`FileEvents.drain`, which the watcher calls only while idle: while a
worker is busy, events just queue (the kernel merges repeated ones), costing
the worker no wake-up.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import select
import threading
import time
from pathlib import Path
from typing import Any, Literal

WATCHED_SUFFIXES = ("", "-wal", "-journal")
"""The files whose writes may be a commit: the database, its WAL, its rollback journal."""

_IN_MODIFY = 0x002
_IN_CLOSE_WRITE = 0x008
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_Q_OVERFLOW = 0x4000
_WATCH_MASK = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE

Woken = Literal["file", "wake", "timeout"]
"""Why :meth:`FileEvents.wait` returned."""


def open_file_events(path: str) -> FileEvents | None:
    """Watch the files of the database at ``path``, or ``None`` where that cannot be done."""
    if path == ":memory:" or path.startswith("file::memory:") or path == "":
        return None  # no file to watch
    try:
        inotify_simple = importlib.import_module("inotify_simple")
    except ImportError:
        return None
    resolved = Path(path).resolve()
    try:
        inotify = inotify_simple.INotify(nonblocking=True)
    except OSError:
        return None
    try:
        inotify.add_watch(str(resolved.parent), _WATCH_MASK)
        wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    except (OSError, AttributeError):  # AttributeError: no os.eventfd
        inotify.close()
        return None
    names = frozenset(resolved.name + suffix for suffix in WATCHED_SUFFIXES)
    return FileEvents(inotify, wake_fd, names)


class FileEvents:
    """An inotify watch on a database's directory and an eventfd to interrupt its wait.

    One thread calls :meth:`wait`, :meth:`drain` and :meth:`close`; any
    thread may call :meth:`interrupt`, even after :meth:`close`.
    """

    def __init__(self, inotify: Any, wake_fd: int, names: frozenset[str]) -> None:
        self._inotify = inotify
        self._wake_fd = wake_fd
        self._names = names
        # Guards _wake_fd against interrupt() writing to it as close() frees it:
        # the number could be reused by another file meanwhile.
        self._lock = threading.Lock()
        self._poller = select.poll()  # poll, not select: any descriptor number works
        self._poller.register(inotify.fileno(), select.POLLIN)
        self._poller.register(wake_fd, select.POLLIN)

    def interrupt(self) -> None:
        """End a :meth:`wait` in progress, or the next one (thread-safe)."""
        with self._lock:
            if self._wake_fd < 0:
                return
            with contextlib.suppress(OSError):  # the counter is full: a wake-up is pending
                os.eventfd_write(self._wake_fd, 1)

    def drain(self) -> None:
        """Forget the events and interrupts queued so far."""
        self._clear_wake()
        self._read_relevant()

    def wait(self, timeout: float) -> Woken:
        """Wait up to ``timeout`` seconds for a write to the database's files or an interrupt."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            ready = {fd for fd, _ in self._poller.poll(remaining * 1000)}
            if self._inotify.fileno() in ready and self._read_relevant():
                return "file"
            if self._wake_fd in ready:
                self._clear_wake()
                return "wake"
            # Otherwise: another file of the directory was written; wait on.

    def close(self) -> None:
        """Free both descriptors."""
        with self._lock:
            wake_fd, self._wake_fd = self._wake_fd, -1
        if wake_fd >= 0:
            os.close(wake_fd)
        self._inotify.close()

    def _read_relevant(self) -> bool:
        """Read every queued event; whether one is a write to a watched file or an overflow."""
        relevant = False
        while True:
            events = self._inotify.read(timeout=0)
            if not events:
                return relevant
            for event in events:
                if event.name in self._names or event.mask & _IN_Q_OVERFLOW:
                    relevant = True

    def _clear_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._wake_fd)
