"""Worker programs run as subprocesses: the one signal loop and the one process handle.

In the worker program (``tests.support.crash_app``, ``tests.faults.pg_app``,
``tests.faults.process_app``, ``tests.faults.test_sqlite_faults``):

- :func:`stop_on_signals`: the signal loop, an event SIGTERM and SIGINT set;
- :func:`run_worker`: run a worker until that event is set, printing
  ``<ready marker> pid=N`` once it claims runs, then stop it gracefully.

In the test process:

- :class:`WorkerProcess`: one ``python -m MODULE ARGS...`` subprocess whose
  output goes to a log file, with its ready line, a graceful stop and a kill;
- :func:`wait_all_ready`, :func:`assert_alive` and :func:`stop_all`: the same
  for a group of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from openworkflow import Worker
from tests.support.waiting import block_until

ROOT = Path(__file__).resolve().parents[2]
"""The repository root: the working directory and ``PYTHONPATH`` of every worker program."""

# -- the worker program ----------------------------------------------------------------------


def stop_on_signals() -> asyncio.Event:
    """An event that SIGTERM and SIGINT set (in place of their default handling)."""
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    return stop_requested


async def run_worker(worker: Worker, stop_requested: asyncio.Event, ready_marker: str) -> None:
    """Start ``worker``, print ``<ready_marker> pid=N``, stop it once ``stop_requested`` is set."""
    await worker.start()
    print(f"{ready_marker} pid={os.getpid()}", flush=True)
    await stop_requested.wait()
    await worker.stop()


# -- worker processes (test-process side) --------------------------------------------------------


class WorkerProcess:
    """One ``python -m MODULE ARGS...`` subprocess whose stdout and stderr go to a log file.

    A subclass names its program (:attr:`module`), the line the program prints
    once it claims runs (:attr:`ready_marker`, followed by `` pid=N``), and how
    :meth:`stop` ends it (:attr:`stop_signals`, :attr:`stop_timeout`). The
    process runs from the repository root with it on ``PYTHONPATH``, unbuffered,
    in this process's environment plus ``env``: pass secrets such as URLs with
    passwords there, not in ``args``, where ``ps`` would show them.
    """

    module: ClassVar[str]
    ready_marker: ClassVar[str]
    stop_signals: ClassVar[tuple[int, ...]] = (signal.SIGTERM,)
    stop_timeout: ClassVar[float] = 30.0

    def __init__(
        self, log_path: Path, args: Sequence[str], env: Mapping[str, str] | None = None
    ) -> None:
        self.log_path = log_path
        environment = {
            **os.environ,
            **(env or {}),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module, *args],
                cwd=ROOT,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._ready = False

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def log(self) -> str:
        """Everything the process has written so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def is_alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None

    def is_ready(self) -> bool:
        """Whether the worker has started claiming runs; raises if it died before that."""
        if self._ready:
            return True
        if f"{self.ready_marker} pid={self.pid}" in self.log():
            self._ready = True
            return True
        if not self.is_alive():
            raise AssertionError(
                f"worker {self.pid} exited with {self.process.returncode} before it was ready:\n"
                + self.log()[-4000:]
            )
        return False

    def signal(self, number: int) -> None:
        """Send a signal if the process is still running."""
        if self.is_alive():
            self.process.send_signal(number)

    def stop(self, timeout: float | None = None) -> int:
        """Send :attr:`stop_signals`, wait for a graceful exit; return the exit code.

        After ``timeout`` seconds (default :attr:`stop_timeout`) the process is
        killed and the stop fails.
        """
        timeout = self.stop_timeout if timeout is None else timeout
        for number in self.stop_signals:
            self.signal(number)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"worker {self.pid} did not stop within {timeout}s") from None

    def kill(self) -> None:
        """SIGKILL if still running, and reap the process."""
        if self.is_alive():
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)


def wait_all_ready(workers: Sequence[WorkerProcess], timeout: float) -> None:
    """Block until every worker printed its ready line (raises if one dies or time runs out)."""
    block_until(
        lambda: all(worker.is_ready() for worker in workers), "the workers to be ready", timeout
    )


def assert_alive(workers: Iterable[WorkerProcess]) -> None:
    """Fail with the log's tail of the first worker that is no longer running."""
    for worker in workers:
        assert worker.is_alive(), f"worker {worker.pid} died:\n{worker.log()[-4000:]}"


def stop_all(workers: Iterable[WorkerProcess]) -> None:
    """Stop every worker in turn; fail with the log's tail of one that does not exit with 0."""
    for worker in workers:
        assert worker.stop() == 0, worker.log()[-4000:]
