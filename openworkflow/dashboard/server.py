"""Serving the dashboard with uvicorn: the listening socket, the logs, the signals.

:func:`serve_dashboard` is what ``ow dashboard`` runs: it applies the bind
policy (:mod:`.exposure`), binds the socket itself (so a busy port is one
clear error), sends uvicorn's logs through the ``openworkflow`` logger's
handlers, rediscovers the workflows on SIGHUP (:mod:`.workflow_reload`), and
serves until SIGINT or SIGTERM: the first shuts down gracefully, a second
at once, and the function then returns normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Generator, Sequence

import uvicorn

from openworkflow.core.backend import Backend
from openworkflow.core.workflow_definition import Workflow
from openworkflow.dashboard.app import create_app
from openworkflow.dashboard.exposure import check_bind
from openworkflow.dashboard.security import BasicCredentials
from openworkflow.dashboard.workflow_reload import Say, reload_on_hangup
from openworkflow.errors import ListenError, UnknownHostError
from openworkflow.settings import EffectiveSettings

GRACEFUL_SHUTDOWN_S = 5
"""Seconds open requests get to finish after the first stop signal."""


def display_url(sock: socket.socket) -> str:
    """``http://host:port`` for a listening socket (IPv6 in brackets)."""
    address = sock.getsockname()
    host, port = str(address[0]), int(address[1])
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def listen(host: str, port: int) -> socket.socket:
    """Bind the listening socket here, to report a busy port as one clear error.

    Raises:
        UnknownHostError: ``host`` does not resolve.
        ListenError: the address cannot be bound.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise UnknownHostError(f"cannot listen on {host!r}: {error.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def route_server_logs(*, debug: bool) -> None:
    """Send uvicorn's logs through the ``openworkflow`` logger's handlers (INFO with debug)."""
    ours = logging.getLogger("openworkflow")
    theirs = logging.getLogger("uvicorn")
    theirs.handlers[:] = list(ours.handlers)
    theirs.setLevel(logging.INFO if debug else logging.WARNING)
    theirs.propagate = False


class _Server(uvicorn.Server):
    """uvicorn, with our start callback and our signal handling.

    uvicorn re-raises the signal that stopped it after shutting down; here
    the first SIGINT/SIGTERM shuts down gracefully, a second one at once,
    and serving then ends normally.
    """

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None], say: Say) -> None:
        super().__init__(config)
        self._on_started = on_started
        self._say = say

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
            self._say("Stopping now")
            self.force_exit = True
        else:
            self._say("Shutting down dashboard… (signal again to stop at once)")
            self.should_exit = True


def _say_nothing(message: str, style: str | None = None) -> None:
    """The default :class:`Say`: messages are dropped."""


async def serve_dashboard(
    backend: Backend,
    settings: EffectiveSettings,
    *,
    workflows: Sequence[Workflow] = (),
    host: str,
    port: int,
    credentials: BasicCredentials | None = None,
    insecure: bool = False,
    debug: bool = False,
    on_listening: Callable[[str], None] = lambda url: None,
    say: Say = _say_nothing,
) -> None:
    """Serve the dashboard for ``backend`` on ``host:port`` until SIGINT or SIGTERM.

    Args:
        backend: An open backend; it is not stopped here.
        settings: Where the project's workflows are, to rediscover them on SIGHUP.
        workflows: The workflows known at start (see :func:`.known_workflows`).
        host: Address to listen on.
        port: Port to listen on (0 picks a free one).
        credentials: HTTP Basic credentials to require, or None.
        insecure: Allow a non-loopback ``host`` without credentials.
        debug: Log uvicorn's messages and every request.
        on_listening: Called with the URL (``http://host:port``) once serving.
        say: Where messages about reloads and shutdown go.

    Raises:
        UnprotectedBindError: a non-loopback ``host`` with neither
            ``credentials`` nor ``insecure``.
        UnknownHostError: ``host`` does not resolve.
        ListenError: the address cannot be bound.
    """
    check_bind(host, credentials, insecure=insecure)
    app = create_app(backend, workflows=workflows, auth=credentials)
    reload_on_hangup(app, settings, say)
    sock = listen(host, port)
    url = display_url(sock)
    route_server_logs(debug=debug)
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=debug,
        lifespan="off",
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    await _Server(config, lambda: on_listening(url), say).serve(sockets=[sock])
