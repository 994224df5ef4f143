"""In-process wake-ups between a backend and the clients and workers using it.

When a client and a worker share a backend object, a new run wakes an idle
worker at once and a finished run wakes ``handle.result()`` at once, instead
of waiting for the next poll. Across processes a backend feeds the same
notifier from the database (PostgreSQL's LISTEN/NOTIFY, SQLite's
``data_version``), and polling remains the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable


class ChangeNotifier:
    """Futures resolved when work becomes available or a run finishes."""

    def __init__(self) -> None:
        self._work_waiters: set[asyncio.Future[None]] = set()
        self._run_waiters: dict[str, set[asyncio.Future[None]]] = {}
        # Run waiters that only watch for a cancel (a pass's lease keeper):
        # they read their run at most every 200 ms anyway, so they need no
        # millisecond wake-ups. The others are counted (read from any thread).
        self._patient: set[asyncio.Future[None]] = set()
        self._prompt_run_waiters = 0
        # Called when a run was parked until a later time (idle workers re-plan).
        self._due_watchers: set[Callable[[], None]] = set()
        # Called whenever work may have become available (the unrouted sweep). A
        # tuple, replaced on change: read on every notify, from any thread.
        self._work_watchers: tuple[Callable[[], None], ...] = ()
        self.on_wait: Callable[[], None] | None = None
        """Called (on the event loop) whenever someone starts waiting."""

    @property
    def has_waiters(self) -> bool:
        """Whether a worker or a ``result()`` is waiting (safe to read from any thread)."""
        return bool(self._work_waiters) or bool(self._run_waiters)

    @property
    def wants_prompt_wakeups(self) -> bool:
        """Whether someone waits who should hear of a change within milliseconds.

        A worker waiting for work or a ``result()``, not only lease keepers
        watching for a cancel (safe to read from any thread).
        """
        return bool(self._work_waiters) or self._prompt_run_waiters > 0

    @property
    def has_prompt_run_waiters(self) -> bool:
        """Whether a ``result()`` (or another non-patient run waiter) waits (any thread)."""
        return self._prompt_run_waiters > 0

    @property
    def has_work_waiters(self) -> bool:
        """Whether a worker waits for work (safe to read from any thread)."""
        return bool(self._work_waiters)

    def notify_external_change(self, max_run_waiters: int = 32) -> None:
        """Another process changed the database, but which runs is unknown.

        Workers are woken; ``result()`` waiters too when there are at most
        ``max_run_waiters`` of them (each re-reads its run, so many waiters
        keep to their polling instead of reading on every change).
        """
        self.notify_work_available()
        if len(self._run_waiters) <= max_run_waiters:
            self.notify_runs_finished(list(self._run_waiters))

    def notify_work_available(self) -> None:
        """Wake every worker waiting for work."""
        for callback in self._work_watchers:
            callback()
        waiters, self._work_waiters = self._work_waiters, set()
        for waiter in waiters:
            resolve_waiter(waiter)

    def watch_work_announced(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` at every :meth:`notify_work_available`, waiting or not.

        It may be called from any thread and must only take note (set a flag).
        Unlike :meth:`watch_work`, it makes nobody a waiter, so a database
        watcher does not read more often for it.
        """
        if callback not in self._work_watchers:
            self._work_watchers = (*self._work_watchers, callback)

    def unwatch_work_announced(self, callback: Callable[[], None]) -> None:
        """Forget a :meth:`watch_work_announced` callback."""
        self._work_watchers = tuple(c for c in self._work_watchers if c != callback)

    def watch_due_later(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the loop) whenever a run is parked until a later time."""
        self._due_watchers.add(callback)

    def unwatch_due_later(self, callback: Callable[[], None]) -> None:
        """Forget a :meth:`watch_due_later` callback."""
        self._due_watchers.discard(callback)

    def notify_due_later(self) -> None:
        """A run was parked until a later time: tell the idle workers to re-read."""
        for callback in list(self._due_watchers):
            callback()

    def notify_runs_finished(self, run_ids: Iterable[str]) -> None:
        """Wake every ``result()`` waiting on one of these runs."""
        for run_id in run_ids:
            for waiter in self._run_waiters.pop(run_id, ()):
                self._forget(waiter)
                resolve_waiter(waiter)

    def notify_run_changed(self, run_id: str) -> None:
        """Wake the readers of a run that goes on (a new stream item), not its lease keepers.

        Lease keepers (patient waiters) only care about a cancel, which comes
        with its own wake-up.
        """
        waiters = self._run_waiters.get(run_id)
        if not waiters:
            return
        for waiter in [waiter for waiter in waiters if waiter not in self._patient]:
            self.unwatch_run(run_id, waiter)
            resolve_waiter(waiter)

    async def wait_for_work(self, timeout: float) -> None:
        """Return when work may be available, or after ``timeout`` seconds."""
        await self._wait(self._work_waiters, timeout)

    def watch_work(self) -> asyncio.Future[None]:
        """A future resolved at the next :meth:`notify_work_available`; :meth:`unwatch_work` it.

        For a waiter that must tell a wake-up from its own timeout (an idle
        worker reads the next due time after a wake-up, not after a timer).
        """
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._work_waiters.add(waiter)
        if self.on_wait is not None:
            self.on_wait()
        return waiter

    def unwatch_work(self, waiter: asyncio.Future[None]) -> None:
        """Forget a :meth:`watch_work` future (resolved or not)."""
        self._work_waiters.discard(waiter)

    async def wait_for_run(self, run_id: str, timeout: float) -> None:
        """Return when the run may have finished, or after ``timeout`` seconds."""
        waiter = self.watch_run(run_id)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, timeout)
        finally:
            self.unwatch_run(run_id, waiter)

    def watch_run(self, run_id: str, *, patient: bool = False) -> asyncio.Future[None]:
        """A future resolved at the run's next wake-up; :meth:`unwatch_run` it when done.

        For a caller that reads the run itself and must not miss a wake-up
        between its read and its wait: watch first, then read, then await.
        ``patient``: the caller reads the run at most every few hundred
        milliseconds whatever wakes it (a lease keeper), so a poller need not
        look every few milliseconds on its behalf.
        """
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._run_waiters.setdefault(run_id, set()).add(waiter)
        if patient:
            self._patient.add(waiter)
        else:
            self._prompt_run_waiters += 1
        if self.on_wait is not None:
            self.on_wait()
        return waiter

    def unwatch_run(self, run_id: str, waiter: asyncio.Future[None]) -> None:
        """Forget a :meth:`watch_run` future (resolved or not); other waiters stay."""
        waiters = self._run_waiters.get(run_id)
        if waiters is not None and waiter in waiters:
            waiters.discard(waiter)
            self._forget(waiter)
            if not waiters:
                del self._run_waiters[run_id]

    def _forget(self, waiter: asyncio.Future[None]) -> None:
        """A run waiter left its set: keep the count of prompt ones right."""
        if waiter in self._patient:
            self._patient.discard(waiter)
        else:
            self._prompt_run_waiters -= 1

    async def _wait(self, waiters: set[asyncio.Future[None]], timeout: float) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.add(waiter)
        if self.on_wait is not None:
            self.on_wait()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, timeout)
        finally:
            waiters.discard(waiter)


def resolve_waiter(waiter: asyncio.Future[None]) -> None:
    """Resolve ``waiter`` on its own loop, from any thread (nothing if done or its loop closed)."""

    def set_done() -> None:
        if not waiter.done():
            waiter.set_result(None)

    loop = waiter.get_loop()
    if loop.is_closed():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        set_done()
    else:
        loop.call_soon_threadsafe(set_done)


@runtime_checkable
class NotifyingBackend(Protocol):
    """A backend offering in-process wake-ups (an optional capability of a backend)."""

    @property
    def notifier(self) -> ChangeNotifier:
        """Wake-ups for the workers and result waiters using this backend."""
        ...


def notifier_of(backend: object) -> ChangeNotifier | None:
    """The backend's notifier, when it offers in-process wake-ups (:class:`NotifyingBackend`)."""
    # An attribute lookup, not isinstance() against the runtime-checkable
    # protocol: that walks the protocol's members, and every result waiter asks.
    notifier = getattr(backend, "notifier", None)
    return notifier if isinstance(notifier, ChangeNotifier) else None


POLL_START_S = 0.05
POLL_MAX_S = 1.0


class RunPoll:
    """The pauses of a caller reading a run until something happens (``result()``, events).

    Each pause ends early when the run finishes and the caller shares the
    worker's backend object (or the backend hears of it: NOTIFY, the SQLite
    watcher), else after a poll interval of 50 ms growing to 1 s; none goes
    past ``timeout_s`` (seconds, or None for no limit).
    """

    def __init__(self, backend: object, timeout_s: float | None) -> None:
        self._notifier = notifier_of(backend)
        self._loop = asyncio.get_running_loop()
        self._deadline = None if timeout_s is None else self._loop.time() + timeout_s
        self._interval = POLL_START_S

    def restart(self) -> None:
        """Poll quickly again (the caller moved on to another run)."""
        self._interval = POLL_START_S

    async def pause(self, run_id: str) -> bool:
        """Wait before the next read of ``run_id``; False once the timeout has run out."""
        remaining = None if self._deadline is None else self._deadline - self._loop.time()
        if remaining is not None and remaining <= 0:
            return False
        wait = self._interval if remaining is None else min(self._interval, remaining)
        if self._notifier is not None:
            await self._notifier.wait_for_run(run_id, wait)
        else:
            await asyncio.sleep(wait)
        self._interval = min(self._interval * 1.5, POLL_MAX_S)
        return True
