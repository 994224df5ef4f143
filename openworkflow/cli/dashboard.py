"""``ow dashboard``: serve the web dashboard and Prometheus metrics.

The serving itself is :func:`openworkflow.dashboard.server.serve_dashboard`.

Safe by default: it listens on 127.0.0.1, and refuses any other address
unless HTTP Basic authentication is configured
(``OPENWORKFLOW_DASHBOARD_AUTH=user:password``) or ``--insecure`` says that
something else protects it. Workflow files are discovered only to learn
their input schemas, so a file that fails to import is a warning here. On
SIGHUP (which ``ow dev`` sends after each reload) they are discovered again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import click

from openworkflow.cli import common, console, failure
from openworkflow.cli.options import common_options, get_state
from openworkflow.core.workflow_definition import Workflow
from openworkflow.dashboard import exposure
from openworkflow.dashboard.security import AUTH_ENVIRONMENT_VARIABLE, BasicCredentials
from openworkflow.dashboard.server import serve_dashboard
from openworkflow.dashboard.workflow_reload import defer_hangups, known_workflows
from openworkflow.errors import (
    InvalidDashboardAuthError,
    ListenError,
    UnknownHostError,
    UnprotectedBindError,
)
from openworkflow.settings import EffectiveSettings

DEFAULT_PORT = 3000


@click.command()
@click.option(
    "--host",
    default=exposure.DEFAULT_HOST,
    show_default=True,
    help=f"Address to listen on; a non-loopback one needs {AUTH_ENVIRONMENT_VARIABLE} "
    "or --insecure.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to listen on (0 picks a free one).",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Allow a non-loopback --host without authentication (e.g. behind an auth proxy).",
)
@click.option("--backend", "backend_url", metavar="URL", help="Database URL (overrides config).")
@click.option("--namespace", "namespace_id", metavar="NS", help="Namespace to show.")
@common_options
def dashboard(
    host: str, port: int, insecure: bool, backend_url: str | None, namespace_id: str | None
) -> None:
    """Serve the web dashboard (runs, steps, create, cancel, retry) and /metrics.

    Prints the URL on stdout. Set OPENWORKFLOW_DASHBOARD_AUTH=user:password to
    require HTTP Basic authentication on every page, /metrics included
    (/healthz stays open for probes). Stop with Ctrl+C.
    """
    console.setup_logging(logging.INFO)
    defer_hangups()
    loaded, settings = common.load(backend_url=backend_url, namespace_id=namespace_id)
    credentials = auth_from_environment()
    check_bind(host, credentials, insecure=insecure)
    common.note_missing_config(loaded, settings)
    workflows = known_workflows(settings, console.say)
    common.run_async(_serve(settings, workflows, host, port, credentials, insecure))


def auth_from_environment() -> BasicCredentials | None:
    """The credentials in ``OPENWORKFLOW_DASHBOARD_AUTH`` (also read from ``.env``).

    Raises:
        CliError: the value is not ``user:password`` (exit code 2).
    """
    try:
        return exposure.auth_from_environment()
    except InvalidDashboardAuthError as error:
        raise failure.usage_error(
            str(error), hint=f"e.g. {AUTH_ENVIRONMENT_VARIABLE}=admin:a-long-random-password"
        ) from None


def check_bind(host: str, credentials: BasicCredentials | None, *, insecure: bool) -> None:
    """The bind policy (:func:`~openworkflow.dashboard.exposure.check_bind`) for the CLI.

    Raises:
        CliError: a non-loopback ``host`` with neither credentials nor
            ``insecure`` (exit code 2).
    """
    try:
        warning = exposure.check_bind(host, credentials, insecure=insecure)
    except UnprotectedBindError as error:
        raise failure.usage_error(
            str(error),
            hint=f"set {AUTH_ENVIRONMENT_VARIABLE}=user:password (HTTP Basic), keep the default "
            f"--host {exposure.DEFAULT_HOST}, or pass --insecure if something else protects it",
        ) from None
    if warning is not None:
        console.say(warning, style="yellow")


async def _serve(
    settings: EffectiveSettings,
    workflows: Sequence[Workflow],
    host: str,
    port: int,
    credentials: BasicCredentials | None,
    insecure: bool,
) -> None:
    # The dashboard creates runs too, and under `ow dev` it may start before the
    # worker has created the database: it may create it.
    backend = common.backend_from(settings)
    protection = (
        f"HTTP Basic authentication as {credentials.username!r}"
        if credentials is not None
        else "no authentication"
    )

    def listening(url: str) -> None:
        click.echo(url)
        console.say(
            f"Dashboard running at {url} ({protection}; backend "
            f"{console.describe_backend(settings.backend)}, namespace "
            f"{settings.namespace_id}). Press Ctrl+C to stop.",
            style="green",
        )

    try:
        await common.connect_now(backend)
        await serve_dashboard(
            backend,
            settings,
            workflows=workflows,
            host=host,
            port=port,
            credentials=credentials,
            insecure=insecure,
            debug=get_state().debug,
            on_listening=listening,
            say=console.say,
        )
    except UnknownHostError as error:
        raise failure.usage_error(str(error), hint="pass an IP address to --host") from None
    except ListenError as error:
        raise failure.CliError(
            str(error), hint="choose another --port (0 picks a free one) or stop what is using it"
        ) from None
    finally:
        await backend.stop()
    console.say("Dashboard stopped")
