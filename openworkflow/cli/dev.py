"""``ow dev``: a worker on the configured backend that reloads when workflow code changes."""

from __future__ import annotations

import asyncio

import click

from openworkflow.config import load_config
from openworkflow.dev import DevSupervisor, dashboard_command, worker_command
from openworkflow.settings import resolve_settings


@click.command("dev")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file.")
@click.option("-c", "--concurrency", type=int, default=None, help="Worker slots.")
@click.option("--no-dashboard", is_flag=True, help="Do not start the dashboard.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Dashboard address (see ow dashboard --help).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=3000,
    show_default=True,
    help="Dashboard port (0 picks a free one).",
)
def dev(
    config_path: str | None,
    concurrency: int | None,
    no_dashboard: bool,
    host: str,
    port: int,
) -> None:
    """Run a worker that restarts when a workflow file or the config changes.

    The worker uses a short lease and releases its runs on every restart,
    so in-flight runs continue at once in the new code. A file with an error
    is reported and the loop keeps watching. The dashboard runs beside it
    (its URL is printed) unless --no-dashboard. Stop with Ctrl-C.
    """
    # A bad config is reported by the group's error boundary: one message, a hint, exit 2.
    loaded = load_config(config_path)
    settings = resolve_settings(loaded, worker_concurrency=concurrency)
    if not no_dashboard:
        from openworkflow.cli.dashboard import auth_from_environment, check_bind

        # Refuse an unprotected public bind here, before anything starts, rather
        # than leave the worker running beside a dashboard child that exited.
        check_bind(host, auth_from_environment(), insecure=False)
    extra = [] if concurrency is None else ["--concurrency", str(concurrency)]
    watch = [*settings.dirs, settings.folder / ".env"]
    if loaded.path is not None:
        watch.append(loaded.path)
    supervisor = DevSupervisor(
        worker_command=worker_command(loaded.path, extra),
        dashboard_command=None if no_dashboard else dashboard_command(loaded.path, host, port),
        watch_paths=watch,
        say=lambda line: click.echo(f"[ow dev] {line}", err=True),
    )
    click.echo(
        f"[ow dev] watching {', '.join(str(path) for path in supervisor.watch_paths)}",
        err=True,
    )
    asyncio.run(supervisor.run_until_interrupted())
    click.echo("[ow dev] stopped", err=True)
