"""``ow worker start``: run the project's workflows until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import click

from openworkflow.cli import common, console, failure
from openworkflow.cli.options import common_options
from openworkflow.core.workflow_definition import Workflow
from openworkflow.dev import DEV_MODULES_ENV, report_project_modules
from openworkflow.discovery import Discovery, discover
from openworkflow.settings import EffectiveSettings
from openworkflow.worker.metrics import MetricsEndpoint, WorkerMetrics, serve
from openworkflow.worker.serving import (
    exit_past_stuck_steps,
    serve_until_signalled,
    stuck_step_threads,
)
from openworkflow.worker.worker import Worker


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
@click.option(
    "--workflow",
    "only",
    metavar="NAME",
    multiple=True,
    help="Run only this workflow (repeatable); other workers take the rest.",
)
@click.option(
    "--metrics-port",
    type=int,
    metavar="P",
    help="Serve worker metrics at http://HOST:P/metrics (0 picks a free port; "
    "overrides config and OPENWORKFLOW_WORKER_METRICS_PORT).",
)
@click.option(
    "--metrics-host",
    metavar="H",
    help="Address the metrics are served on (default 127.0.0.1; 0.0.0.0 for every interface).",
)
@common_options
def start(
    concurrency: int | None,
    backend_url: str | None,
    namespace_id: str | None,
    only: tuple[str, ...],
    metrics_port: int | None,
    metrics_host: str | None,
) -> None:
    """Execute the workflows found in the configured dirs until stopped.

    The worker claims only runs of the workflows it loaded (--workflow narrows
    them). The first SIGINT/SIGTERM stops gracefully (running steps may
    finish, the rest is handed back for another worker); a second one stops
    at once.
    """
    console.setup_logging(logging.INFO)
    _, settings = common.load(
        backend_url=backend_url,
        namespace_id=namespace_id,
        worker_concurrency=concurrency,
        worker_metrics_port=metrics_port,
        worker_metrics_host=metrics_host,
    )
    loaded = select_workflows(require_workflows(settings).workflows, only)
    console.say(f"Loaded {len(loaded)} workflow(s): {names_of(loaded)}")
    common.run_async(_serve(settings, loaded))
    stuck = stuck_step_threads()
    if stuck:
        console.say(
            f"Leaving {stuck} step thread(s) still running; their runs were handed back",
            style="yellow",
        )
        exit_past_stuck_steps()


def require_workflows(settings: EffectiveSettings) -> Discovery:
    """Discover the workflows; import problems, duplicates or none at all are fatal.

    Raises:
        CliError: the workflows cannot be loaded cleanly (exit code 2).
    """
    found = discover(settings.dirs, settings.ignore_patterns, settings.folder)
    if found.problems or found.duplicates:
        listing = [f"  {item}" for item in (*found.problems, *found.duplicates)]
        raise failure.usage_error(
            "cannot load the workflows:\n" + "\n".join(listing),
            hint="fix the files above; `ow doctor` shows the whole picture",
        )
    if not found.workflows:
        raise failure.usage_error(
            f"No workflows found in {_dirs(settings.dirs)}",
            hint="define one with @workflow in a .py file there, set `dirs` in "
            "openworkflow.config.py, or run `ow init` for an example",
        )
    return found


def select_workflows(found: Sequence[Workflow], only: Sequence[str]) -> list[Workflow]:
    """The workflows named by ``--workflow`` (every version), or all of them.

    Raises:
        CliError: a name matches no workflow of the project (exit code 2).
    """
    if not only:
        return list(found)
    unknown = sorted({name for name in only if all(item.name != name for item in found)})
    if unknown:
        raise failure.usage_error(
            f"--workflow {', '.join(unknown)}: no such workflow in this project "
            f"(it has: {names_of(found)})",
            hint="check the name (`ow workflows list` shows them)",
        )
    return [item for item in found if item.name in only]


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
    endpoint: MetricsEndpoint | None = None
    try:
        await common.connect_now(backend)
        metrics = None if settings.metrics_port is None else WorkerMetrics()
        running = Worker(
            backend,
            workflows,
            concurrency=settings.concurrency,
            lease_duration=settings.lease_duration,
            shutdown_timeout=settings.shutdown_timeout,
            step_crash_limit=settings.step_crash_limit,
            retention=settings.retention,
            metrics=metrics,
        )
        if metrics is not None:
            endpoint = _serve_metrics(metrics, settings.metrics_host, settings.metrics_port or 0)

        def started() -> None:
            console.say(
                f"Worker started: concurrency {settings.concurrency}, "
                f"backend {console.describe_backend(settings.backend)}, "
                f"namespace {settings.namespace_id}. Press Ctrl+C to stop.",
                style="green",
            )
            if endpoint is not None:
                console.say(f"Worker metrics at {endpoint.url}")

        report = _report_modules_for_dev()
        await serve_until_signalled(running, on_started=started, on_signal=_say_stopping)
        if report is not None:
            report.cancel()
    finally:
        if endpoint is not None:
            endpoint.close()
        await backend.stop()
    console.say("Worker stopped")


def _serve_metrics(metrics: WorkerMetrics, host: str, port: int) -> MetricsEndpoint:
    """Serve the worker's metrics; a port that cannot be bound is a usage error."""
    try:
        return serve(metrics.registry, host, port)
    except OSError as error:
        raise failure.usage_error(
            f"cannot serve worker metrics on {host}:{port}: {error.strerror or error}",
            hint="choose another --metrics-port (0 picks a free one) or --metrics-host",
        ) from None


def _report_modules_for_dev() -> asyncio.Task[None] | None:
    """Under ``ow dev``, report the project modules imported, so edits to them reload."""
    destination = os.environ.get(DEV_MODULES_ENV)
    if not destination:
        return None
    return asyncio.get_running_loop().create_task(report_project_modules(Path(destination)))


def _say_stopping(now: bool) -> None:
    if now:
        console.say("Stopping now")
    else:
        console.say("Shutting down worker… (signal again to stop at once)")
