"""Serving a worker as a process does: until SIGINT or SIGTERM, then draining.

The first signal stops gracefully (running steps may finish, the rest is
handed back so another worker resumes it at once); a second one stops at
once. ``ow worker start`` is this plus printing; an application embedding a
worker in its own process can call :func:`serve_until_signalled` too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

from openworkflow.worker.worker import STEP_THREAD_PREFIX, Worker

StopNotice = Callable[[bool], None]
"""Told of each stop signal: False for the first (graceful), True for a second one."""


async def serve_until_signalled(
    worker: Worker,
    *,
    on_started: Callable[[], None] | None = None,
    on_signal: StopNotice | None = None,
) -> None:
    """Start ``worker`` and serve until a signal has stopped it (see the module doc).

    ``on_started`` is called once the worker runs; ``on_signal`` on each signal.
    """
    stopping = _StopOnSignals(worker, on_signal or (lambda _now: None))
    stopping.install()
    await worker.start()
    if on_started is not None:
        on_started()
    await stopping.wait()


class _StopOnSignals:
    """First SIGINT/SIGTERM: graceful :meth:`Worker.stop`; a second one: stop at once."""

    def __init__(self, worker: Worker, notice: StopNotice) -> None:
        self._worker = worker
        self._notice = notice
        self._requested = asyncio.Event()
        self._stops: list[asyncio.Task[None]] = []

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for number in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(number, self._on_signal)
            except NotImplementedError:  # Windows event loops
                signal.signal(number, lambda *_: loop.call_soon_threadsafe(self._on_signal))

    def _on_signal(self) -> None:
        self._notice(bool(self._stops))
        self._stops.append(asyncio.get_running_loop().create_task(self._worker.stop()))
        self._requested.set()

    async def wait(self) -> None:
        """Return once a signal came and the worker has stopped."""
        await self._requested.wait()
        while True:
            pending = list(self._stops)
            await asyncio.gather(*pending)
            if len(pending) == len(self._stops):
                return


def stuck_step_threads() -> int:
    """Sync step bodies still running in their threads (their runs were handed back)."""
    return sum(
        1
        for thread in threading.enumerate()
        if thread.name.startswith(STEP_THREAD_PREFIX) and thread.is_alive()
    )


def exit_past_stuck_steps() -> None:
    """Exit the process now if sync step bodies are still running in their threads.

    Their runs were handed back when the worker stopped; Python would join
    those threads at exit, keeping the process alive (and deaf to signals)
    until the steps return.
    """
    if not stuck_step_threads():
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
