"""``ow dashboard``: serve the web dashboard and Prometheus metrics with uvicorn.

Safe by default: it listens on 127.0.0.1, and refuses any other address
unless HTTP Basic authentication is configured
(``OPENWORKFLOW_DASHBOARD_AUTH=user:password``) or ``--insecure`` says that
something else protects it. Workflow files are discovered only to learn
their input schemas (the create-run form validates against them), so a file
that fails to import is a warning here, not an error. On SIGHUP (which
``ow dev`` sends after each reload) the workflows are discovered again; if
a file is broken then, the previous list stays and the error is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Generator, Sequence

import click
import uvicorn
from starlette.applications import Starlette

from openworkflow.cli import common
from openworkflow.cli.options import common_options, get_state
from openworkflow.core.workflow_definition import Workflow
from openworkflow.dashboard import create_app
from openworkflow.dashboard.app import replace_workflows
from openworkflow.dashboard.security import (
    AUTH_ENVIRONMENT_VARIABLE,
    BasicCredentials,
    is_loopback_host,
    parse_basic_auth,
)
from openworkflow.discovery import discover
from openworkflow.settings import EffectiveSettings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3000
_GRACEFUL_SHUTDOWN_S = 5


@click.command()
@click.option(
    "--host",
    default=DEFAULT_HOST,
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
    common.setup_logging(logging.INFO)
    _defer_hangups()
    loaded, settings = common.load(backend_url=backend_url, namespace_id=namespace_id)
    credentials = auth_from_environment()
    check_bind(host, credentials, insecure=insecure)
    common.note_missing_config(loaded, settings)
    workflows = known_workflows(settings)
    common.run_async(_serve(settings, workflows, host, port, credentials))


def auth_from_environment() -> BasicCredentials | None:
    """The credentials in ``OPENWORKFLOW_DASHBOARD_AUTH`` (also read from ``.env``).

    Raises:
        CliError: the value is not ``user:password`` (exit code 2).
    """
    value = os.environ.get(AUTH_ENVIRONMENT_VARIABLE, "")
    if not value:
        return None
    try:
        return parse_basic_auth(value)
    except ValueError as error:
        raise common.usage_error(
            str(error), hint=f"e.g. {AUTH_ENVIRONMENT_VARIABLE}=admin:a-long-random-password"
        ) from None


def check_bind(host: str, credentials: BasicCredentials | None, *, insecure: bool) -> None:
    """Refuse to expose the dashboard beyond this machine without authentication.

    Raises:
        CliError: a non-loopback ``host`` with neither credentials nor
            ``insecure`` (exit code 2).
    """
    if is_loopback_host(host) or credentials is not None:
        return
    if insecure:
        common.say(
            f"Warning: serving on {host} without authentication (--insecure): anyone who can "
            "reach this port can read, start, cancel and retry runs.",
            style="yellow",
        )
        return
    raise common.usage_error(
        f"refusing to serve the dashboard on {host} without authentication: anyone who can "
        "reach it could read, start, cancel and retry runs",
        hint=f"set {AUTH_ENVIRONMENT_VARIABLE}=user:password (HTTP Basic), keep the default "
        f"--host {DEFAULT_HOST}, or pass --insecure if something else protects it",
    )


def known_workflows(settings: EffectiveSettings) -> list[Workflow]:
    """The project's workflows, for their input schemas; problems are only warnings."""
    found = discover(settings.dirs, settings.ignore_patterns, settings.folder)
    for problem in (*found.problems, *found.duplicates):
        common.say(f"Warning: {problem}", style="yellow")
    if found.problems:
        common.say(
            "Runs of workflows in those files are created without input validation.",
            style="yellow",
        )
    if found.workflows:
        names = ", ".join(sorted({item.name for item in found.workflows}))
        common.say(f"Input schemas known for: {names}", style="dim")
    return found.workflows


_early_hangups: list[int] = []


def _defer_hangups() -> None:
    """Until the server runs, only note a SIGHUP (its default action would end the process)."""
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda signum, _frame: _early_hangups.append(signum))


def reload_workflows(app: Starlette, settings: EffectiveSettings) -> bool:
    """Discover the project's workflows again and give them to the running dashboard.

    A file that fails to import (or a duplicate) keeps the previous list: the
    problem is logged and False returned.
    """
    found = discover(settings.dirs, settings.ignore_patterns, settings.folder)
    problems = [*found.problems, *found.duplicates]
    if problems:
        for problem in problems:
            common.say(f"Workflow reload failed: {problem}", style="red")
        common.say("The dashboard keeps the workflows it knew before.", style="yellow")
        return False
    replace_workflows(app, found.workflows)
    names = ", ".join(sorted({item.name for item in found.workflows})) or "none"
    common.say(f"Workflows reloaded: {names}", style="dim")
    return True


def _reload_on_hangup(app: Starlette, settings: EffectiveSettings) -> None:
    """Rediscover the workflows on SIGHUP (and now, if one came during start-up)."""
    if not hasattr(signal, "SIGHUP"):
        return
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reload_workflows, app, settings)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
        return
    if _early_hangups:
        _early_hangups.clear()
        reload_workflows(app, settings)


def display_url(sock: socket.socket) -> str:
    """``http://host:port`` for a listening socket (IPv6 in brackets)."""
    address = sock.getsockname()
    host, port = str(address[0]), int(address[1])
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _listen(host: str, port: int) -> socket.socket:
    """Bind the listening socket here, to report a busy port as one clear error."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise common.usage_error(
            f"cannot listen on {host!r}: {error.strerror}", hint="pass an IP address to --host"
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise common.CliError(
            f"cannot listen on {host}:{port}: {error.strerror or error}",
            hint="choose another --port (0 picks a free one) or stop what is using it",
        ) from None
    return sock


class _Server(uvicorn.Server):
    """uvicorn, with our start message and our signal handling.

    uvicorn re-raises the signal that stopped it after shutting down; here
    the first SIGINT/SIGTERM shuts down gracefully, a second one at once,
    and the command then ends normally (exit code 0).
    """

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        installed: list[int] = []
        for number in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(number, self._on_signal)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                continue
            installed.append(number)
        try:
            yield
        finally:
            for handled in installed:
                loop.remove_signal_handler(handled)

    def _on_signal(self) -> None:
        if self.should_exit:
            common.say("Stopping now")
            self.force_exit = True
        else:
            common.say("Shutting down dashboard… (signal again to stop at once)")
            self.should_exit = True


def _route_server_logs() -> None:
    """Send uvicorn's logs through our (password-scrubbing) handler."""
    ours = logging.getLogger("openworkflow")
    theirs = logging.getLogger("uvicorn")
    theirs.handlers[:] = list(ours.handlers)
    theirs.setLevel(logging.INFO if get_state().debug else logging.WARNING)
    theirs.propagate = False


async def _serve(
    settings: EffectiveSettings,
    workflows: Sequence[Workflow],
    host: str,
    port: int,
    credentials: BasicCredentials | None,
) -> None:
    # The dashboard creates runs too, and under `ow dev` it may start before the
    # worker has created the database: it may create it.
    backend = common.backend_from(settings)
    try:
        await common.connect_now(backend)
        app = create_app(backend, workflows=workflows, auth=credentials)
        _reload_on_hangup(app, settings)
        sock = _listen(host, port)
        url = display_url(sock)
        _route_server_logs()
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=get_state().debug,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
        )

        def started() -> None:
            click.echo(url)
            protection = (
                f"HTTP Basic authentication as {credentials.username!r}"
                if credentials is not None
                else "no authentication"
            )
            common.say(
                f"Dashboard running at {url} ({protection}; backend "
                f"{common.describe_backend(settings.backend)}, namespace "
                f"{settings.namespace_id}). Press Ctrl+C to stop.",
                style="green",
            )

        await _Server(config, started).serve(sockets=[sock])
    finally:
        await backend.stop()
    common.say("Dashboard stopped")
