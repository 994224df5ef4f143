"""The ``ow dev`` loop: a worker process that restarts when workflow code changes.

The supervisor starts ``python -m openworkflow worker start`` as a child with a
short lease and shutdown timeout, watches the config file, ``.env`` and the
workflow folders (``*.py`` only, so database files and their ``-wal``/``-shm``
companions never trigger), and on a change stops the child gracefully (it
releases its leases, so in-flight runs resume at once in the new code) and
starts a new one. A child that fails to start (a broken file) is reported and
the loop keeps watching.

The dashboard, when asked for, is a second child (``ow dashboard``) started
once: it reads runs from the database, so a reload does not need to touch it
and open pages keep working across worker restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from watchfiles import Change, awatch

DEV_LEASE = "5s"
DEV_SHUTDOWN_TIMEOUT = "500ms"
_STOP_GRACE_SECONDS = 5.0


def is_reload_trigger(path: str) -> bool:
    """Whether a changed path should restart the worker (Python sources and ``.env``)."""
    name = os.path.basename(path)
    if "__pycache__" in path.split(os.sep):
        return False
    return name.endswith(".py") or name == ".env"


class DevSupervisor:
    """Runs and restarts the worker process for ``ow dev``."""

    def __init__(
        self,
        *,
        worker_command: Sequence[str],
        watch_paths: Iterable[Path],
        dashboard_command: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
        say: Callable[[str], None] = print,
    ) -> None:
        self.worker_command = list(worker_command)
        self.dashboard_command = None if dashboard_command is None else list(dashboard_command)
        self.watch_paths = [path for path in watch_paths if path.exists()]
        self.env = {
            **os.environ,
            "OPENWORKFLOW_WORKER_LEASE_DURATION": DEV_LEASE,
            "OPENWORKFLOW_WORKER_SHUTDOWN_TIMEOUT": DEV_SHUTDOWN_TIMEOUT,
            **(env or {}),
        }
        self.say = say
        self.restarts = 0
        self._process: asyncio.subprocess.Process | None = None
        self._watch_process: asyncio.Task[None] | None = None
        self._dashboard: asyncio.subprocess.Process | None = None
        self._watch_dashboard: asyncio.Task[None] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Start the worker and restart it on every relevant change until ``stop`` is set."""
        await self._start_dashboard()
        await self._start()
        watch_stop = asyncio.Event()
        stopper = asyncio.ensure_future(self._relay(stop, watch_stop))
        try:
            async for changes in awatch(
                *self.watch_paths,
                watch_filter=lambda _change, path: is_reload_trigger(path),
                stop_event=watch_stop,
                step=50,
                debounce=1600,
            ):
                changed = sorted({path for change, path in changes if change != Change.deleted})
                removed = sorted({path for change, path in changes if change == Change.deleted})
                self.say(f"changed: {', '.join(changed + removed)}; restarting the worker")
                started = time.perf_counter()
                await self._stop_worker()
                await self._start()
                self.restarts += 1
                self.say(f"worker restarted in {(time.perf_counter() - started) * 1000:.0f} ms")
        finally:
            stopper.cancel()
            await self._stop_worker()
            await self._stop_dashboard()

    @staticmethod
    async def _relay(stop: asyncio.Event, watch_stop: asyncio.Event) -> None:
        await stop.wait()
        watch_stop.set()

    async def _start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(*self.worker_command, env=self.env)
        self._watch_process = asyncio.ensure_future(self._report_exit(self._process))

    async def _report_exit(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if process is self._process and code != 0:
            self.say(
                f"the worker exited with code {code}; fix the error above, "
                "it restarts on the next change"
            )

    async def _start_dashboard(self) -> None:
        if self.dashboard_command is None:
            return
        process = await asyncio.create_subprocess_exec(*self.dashboard_command, env=self.env)
        self._dashboard = process
        self._watch_dashboard = asyncio.ensure_future(self._report_dashboard_exit(process))

    async def _report_dashboard_exit(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if process is self._dashboard and code != 0:
            self.say(
                f"the dashboard exited with code {code} (see above); the worker keeps "
                "running: restart ow dev to try again, or pass --no-dashboard"
            )

    async def _stop_dashboard(self) -> None:
        process, self._dashboard = self._dashboard, None
        await _terminate(process)

    async def _stop_worker(self) -> None:
        process, self._process = self._process, None
        await _terminate(process)


async def _terminate(process: asyncio.subprocess.Process | None) -> None:
    """SIGTERM a child (a graceful stop), then SIGKILL it if it lingers."""
    if process is None or process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), _STOP_GRACE_SECONDS)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def _ow_command(config_path: Path | None, *subcommand: str) -> list[str]:
    # -P: the project's folder is not put first on sys.path, so a user folder
    # named openworkflow/ cannot shadow this package.
    command = [sys.executable, "-P", "-m", "openworkflow", *subcommand]
    if config_path is not None:
        command += ["--config", str(config_path)]
    return command


def worker_command(config_path: Path | None, extra: Sequence[str] = ()) -> list[str]:
    """The command line of the dev worker process."""
    return [*_ow_command(config_path, "worker", "start"), *extra]


def dashboard_command(config_path: Path | None, host: str, port: int) -> list[str]:
    """The command line of the dev dashboard process."""
    return [*_ow_command(config_path, "dashboard"), "--host", host, "--port", str(port)]
