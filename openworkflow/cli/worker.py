"""``ow worker start``: run the project's workflows until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import click

from openworkflow.cli import common
from openworkflow.cli.options import common_options
from openworkflow.core.workflow_definition import Workflow
from openworkflow.dev import DEV_MODULES_ENV, report_project_modules
from openworkflow.discovery import Discovery, discover
from openworkflow.settings import EffectiveSettings
from openworkflow.worker.worker import STEP_THREAD_PREFIX, Worker


@click.group()
@common_options
def worker() -> None:
    """Run workers."""


@worker.command()
@click.option(
    "-c",
    "--concurrency",
    type=int,
    metavar="N",
    help="Runs executed at once (overrides config and OPENWORKFLOW_WORKER_CONCURRENCY).",
)
@click.option("--backend", "backend_url", metavar="URL", help="Database URL (overrides config).")
@click.option("--namespace", "namespace_id", metavar="NS", help="Namespace to work in.")
@common_options
def start(concurrency: int | None, backend_url: str | None, namespace_id: str | None) -> None:
    """Execute the workflows found in the configured dirs until stopped.

    The first SIGINT/SIGTERM stops gracefully (running steps may finish, the
    rest is handed back for another worker); a second one stops at once.
    """
    common.setup_logging(logging.INFO)
    _, settings = common.load(
        backend_url=backend_url, namespace_id=namespace_id, worker_concurrency=concurrency
    )
    found = require_workflows(settings)
    common.say(f"Loaded {len(found.workflows)} workflow(s): {names_of(found.workflows)}")
    common.run_async(_serve(settings, found.workflows))
    _exit_past_stuck_steps()


def _exit_past_stuck_steps() -> None:
    """Exit now if sync step bodies are still running in their threads.

    Their runs were handed back when the worker stopped; Python would join
    those threads at exit, keeping the process alive (and deaf to signals)
    until the steps return.
    """
    stuck = [
        thread
        for thread in threading.enumerate()
        if thread.name.startswith(STEP_THREAD_PREFIX) and thread.is_alive()
    ]
    if not stuck:
        return
    common.say(
        f"Leaving {len(stuck)} step thread(s) still running; their runs were handed back",
        style="yellow",
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def require_workflows(settings: EffectiveSettings) -> Discovery:
    """Discover the workflows; import problems, duplicates or none at all are fatal.

    Raises:
        CliError: the workflows cannot be loaded cleanly (exit code 2).
    """
    found = discover(settings.dirs, settings.ignore_patterns, settings.folder)
    if found.problems or found.duplicates:
        listing = [f"  {item}" for item in (*found.problems, *found.duplicates)]
        raise common.usage_error(
            "cannot load the workflows:\n" + "\n".join(listing),
            hint="fix the files above; `ow doctor` shows the whole picture",
        )
    if not found.workflows:
        raise common.usage_error(
            f"No workflows found in {_dirs(settings.dirs)}",
            hint="define one with @workflow in a .py file there, set `dirs` in "
            "openworkflow.config.py, or run `ow init` for an example",
        )
    return found


def names_of(workflows: Sequence[Workflow]) -> str:
    """``name, name (version: v)``, for messages."""
    return ", ".join(
        item.name if item.version is None else f"{item.name} (version: {item.version})"
        for item in workflows
    )


def _dirs(dirs: Sequence[Path]) -> str:
    return ", ".join(str(directory) for directory in dirs) or "(no dirs configured)"


async def _serve(settings: EffectiveSettings, workflows: Sequence[Workflow]) -> None:
    backend = common.backend_from(settings)
    try:
        await common.connect_now(backend)
        running = Worker(
            backend,
            workflows,
            concurrency=settings.concurrency,
            lease_duration=settings.lease_duration,
            shutdown_timeout=settings.shutdown_timeout,
            step_crash_limit=settings.step_crash_limit,
        )
        stopping = _StopOnSignals(running)
        stopping.install()
        await running.start()
        report = _report_modules_for_dev()
        common.say(
            f"Worker started: concurrency {settings.concurrency}, "
            f"backend {common.describe_backend(settings.backend)}, "
            f"namespace {settings.namespace_id}. Press Ctrl+C to stop.",
            style="green",
        )
        await stopping.wait()
        if report is not None:
            report.cancel()
    finally:
        await backend.stop()
    common.say("Worker stopped")


def _report_modules_for_dev() -> asyncio.Task[None] | None:
    """Under ``ow dev``, report the project modules imported, so edits to them reload."""
    destination = os.environ.get(DEV_MODULES_ENV)
    if not destination:
        return None
    return asyncio.get_running_loop().create_task(report_project_modules(Path(destination)))


class _StopOnSignals:
    """First SIGINT/SIGTERM: graceful :meth:`Worker.stop`; a second one: stop at once."""

    def __init__(self, running: Worker) -> None:
        self._worker = running
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
        if not self._stops:
            common.say("Shutting down worker… (signal again to stop at once)")
        else:
            common.say("Stopping now")
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
