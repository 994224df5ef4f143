"""The ``ow dev`` loop: a worker process that restarts when workflow code changes.

The supervisor starts ``python -m openworkflow worker start`` as a child with a
short lease and shutdown timeout, and restarts it (gracefully: it releases its
leases, so in-flight runs resume at once in the new code) when one of these
changes: a ``*.py`` file under the workflow folders, the config file, ``.env``,
or any other Python module of the project that the worker imported (a helper
outside the workflow folders). The worker reports the files of the project
modules it imported to a file the supervisor watches
(:data:`DEV_MODULES_ENV`), so the watched set follows the code. Database
files and their ``-wal``/``-shm`` companions never trigger. A child that fails
to start (a broken file) is reported and the loop keeps watching.

The dashboard, when asked for, is a second child (``ow dashboard``) started
once: it reads runs from the database, so a reload does not need to touch it
and open pages keep working across worker restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from watchfiles import Change, awatch

DEV_LEASE = "5s"
DEV_SHUTDOWN_TIMEOUT = "500ms"
_STOP_GRACE_SECONDS = 5.0
DEV_MODULES_ENV = "OPENWORKFLOW_DEV_MODULES_FILE"
"""Where a dev worker writes the files of the project modules it imported (JSON list)."""
_MODULES_REPORT_INTERVAL = 1.0


def is_reload_trigger(path: str) -> bool:
    """Whether a changed path may restart the worker (Python sources and ``.env``)."""
    name = os.path.basename(path)
    if "__pycache__" in path.split(os.sep):
        return False
    return name.endswith(".py") or name == ".env"


def _installed_roots() -> tuple[Path, ...]:
    """Folders of the interpreter, the standard library and installed packages."""
    found = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix)}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        with contextlib.suppress(KeyError):
            found.add(Path(sysconfig.get_paths()[key]))
    found.add(Path(__file__).resolve().parent)  # this package, even installed editable
    return tuple(root.resolve() for root in found)


def project_module_files() -> list[str]:
    """The source files of the imported modules that belong to the user's project.

    That is every imported ``.py`` file outside the interpreter, the standard
    library, installed packages and this package.
    """
    installed = _installed_roots()
    files: set[str] = set()
    for module in list(sys.modules.values()):
        location = getattr(module, "__file__", None)
        if not location or not location.endswith(".py"):
            continue
        path = Path(location).resolve()
        if not any(path.is_relative_to(root) for root in installed):
            files.add(str(path))
    return sorted(files)


async def report_project_modules(destination: Path) -> None:
    """Keep ``destination`` up to date with :func:`project_module_files` (until cancelled).

    Checked every second, so a module imported later (inside a step) is watched too;
    the file is replaced atomically, so a reader never sees half of it.
    """
    written: list[str] | None = None
    while True:
        files = project_module_files()
        if files != written:
            temporary = destination.with_name(destination.name + ".tmp")
            temporary.write_text(json.dumps(files), encoding="utf-8")
            os.replace(temporary, destination)
            written = files
        await asyncio.sleep(_MODULES_REPORT_INTERVAL)


class DevSupervisor:
    """Runs and restarts the worker process for ``ow dev``.

    ``watch_paths`` are the workflow folders (any ``*.py`` below them counts)
    and single files (the config, ``.env``); the project modules the worker
    reports are watched as single files on top of those.
    """

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
        self.watch_paths = [path.resolve() for path in watch_paths if path.exists()]
        self._report_dir = Path(tempfile.mkdtemp(prefix="ow-dev-"))
        self._report = self._report_dir / "modules.json"
        self._modules: frozenset[Path] = frozenset()
        self.env = {
            **os.environ,
            "OPENWORKFLOW_WORKER_LEASE_DURATION": DEV_LEASE,
            "OPENWORKFLOW_WORKER_SHUTDOWN_TIMEOUT": DEV_SHUTDOWN_TIMEOUT,
            **(env or {}),
            DEV_MODULES_ENV: str(self._report),
        }
        self.say = say
        self.restarts = 0
        self._process: asyncio.subprocess.Process | None = None
        self._watch_process: asyncio.Task[None] | None = None
        self._dashboard: asyncio.subprocess.Process | None = None
        self._watch_dashboard: asyncio.Task[None] | None = None

    async def run_until_interrupted(self) -> None:
        """:meth:`run` until SIGINT or SIGTERM (Ctrl-C in the terminal)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # Windows event loops
                loop.add_signal_handler(number, stop.set)
        await self.run(stop)

    async def run(self, stop: asyncio.Event) -> None:
        """Start the worker and restart it on every relevant change until ``stop`` is set."""
        await self._start_dashboard()
        await self._start()
        try:
            while not stop.is_set():
                await self._watch_once(stop)
        finally:
            await self._stop_worker()
            await self._stop_dashboard()
            shutil.rmtree(self._report_dir, ignore_errors=True)

    async def _watch_once(self, stop: asyncio.Event) -> None:
        """Watch the current paths until ``stop``, a reload, or a new set of modules.

        The watcher is built anew after each of those, so the modules the worker
        reports (and files an editor replaced) are watched as they are now.
        """
        watch_stop = asyncio.Event()
        relay = asyncio.ensure_future(self._relay(stop, watch_stop))
        try:
            async for changes in awatch(
                *self.watch_paths,
                *sorted(self._modules),
                self._report_dir,
                watch_filter=lambda _change, path: self._is_trigger(path),
                stop_event=watch_stop,
                step=50,
                debounce=1600,
            ):
                code = {(change, path) for change, path in changes if path != str(self._report)}
                if code:
                    await self._restart_worker(code)
                if len(code) < len(changes):
                    self._read_modules()
                return
        finally:
            relay.cancel()

    def _is_trigger(self, path: str) -> bool:
        """Whether a change to ``path`` restarts the worker (or is the module report)."""
        if path == str(self._report):
            return True
        if not is_reload_trigger(path):
            return False
        changed = Path(path)
        if changed in self._modules or changed in self.watch_paths:
            return True
        return any(
            folder.is_dir() and changed.is_relative_to(folder) for folder in self.watch_paths
        )

    def _read_modules(self) -> None:
        """Take the worker's latest list of project modules (a half-written one is skipped)."""
        try:
            files = json.loads(self._report.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        self._modules = frozenset(Path(item) for item in files if Path(item).exists())

    async def _restart_worker(self, changes: set[tuple[Change, str]]) -> None:
        changed = sorted({path for change, path in changes if change != Change.deleted})
        removed = sorted({path for change, path in changes if change == Change.deleted})
        self.say(f"changed: {', '.join(changed + removed)}; restarting the worker")
        started = time.perf_counter()
        await self._stop_worker()
        await self._start()
        self.restarts += 1
        self.say(f"worker restarted in {(time.perf_counter() - started) * 1000:.0f} ms")
        # The dashboard rediscovers the workflows on SIGHUP (its create-run form follows).
        if self._dashboard is not None and self._dashboard.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._dashboard.send_signal(signal.SIGHUP)

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
