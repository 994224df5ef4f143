"""A connection attempt that times out closes its socket at once, not at the next GC pass.

psycopg keeps a timed-out attempt alive in a reference cycle; the server side
of its socket (a backend waiting for the handshake) then lives until
``authentication_timeout``, and a PostgreSQL shutdown waits for it: the fault
tests saw ``pg_ctlcluster stop -m immediate`` take 60 s while workers retried
(``openworkflow/postgres/attempt.py``). These tests stand a silent server in
for PostgreSQL (it accepts and reads, never answers) and disable the garbage
collector, so only closing the socket on the spot passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from openworkflow.errors import BackendUnavailableError
from openworkflow.notifications import ChangeNotifier
from openworkflow.postgres import PostgresBackend
from openworkflow.postgres.attempt import EngineConnection
from openworkflow.postgres.listener import NotificationListener

CONNECT_TIMEOUT_S = 1
CLOSED_WITHIN_S = 2.0
"""After the attempt's timeout: how soon the silent server must see the socket closed."""


class SilentServer:
    """Accepts connections and reads what they send; answers nothing."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.accepted = threading.Event()
        self.closed_by_client = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _serve(self) -> None:
        with contextlib.suppress(OSError):  # the listener closed under accept()
            client, _ = self._listener.accept()
            self.accepted.set()
            with client:
                while client.recv(4096):
                    pass  # the SSL request or startup packet: read, never answered
                self.closed_by_client.set()

    def close(self) -> None:
        self._listener.close()


@pytest.fixture(name="silent")
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    was_enabled = gc.isenabled()
    gc.disable()  # only an explicit close may close the socket in time
    try:
        yield server
    finally:
        if was_enabled:
            gc.enable()
        server.close()


async def test_a_backend_whose_server_never_answers_closes_the_attempt(
    silent: SilentServer,
) -> None:
    backend = PostgresBackend(silent.url, connect_timeout=CONNECT_TIMEOUT_S)
    with pytest.raises(BackendUnavailableError, match="timeout"):
        await backend.open()
    assert silent.accepted.is_set()
    closed = await asyncio.to_thread(silent.closed_by_client.wait, CLOSED_WITHIN_S)
    assert closed, "the timed-out attempt's socket was left open"


async def test_a_listener_whose_server_never_answers_closes_each_attempt(
    silent: SilentServer,
) -> None:
    listener = NotificationListener(
        silent.url, {"connect_timeout": CONNECT_TIMEOUT_S}, "ow_test", "public", ChangeNotifier()
    )
    listener.start()
    try:
        accepted = await asyncio.to_thread(silent.accepted.wait, 5.0)
        assert accepted
        closed = await asyncio.to_thread(
            silent.closed_by_client.wait, CONNECT_TIMEOUT_S + CLOSED_WITHIN_S
        )
        assert closed, "the listener's timed-out attempt left its socket open"
    finally:
        await listener.stop()


@pytest.mark.parametrize("backend_kind", ["postgres"], indirect=True)
async def test_every_pool_connects_through_the_closing_class(backend: Any) -> None:
    for kind in ("main", "lease", "claim"):
        pool = await backend._db.pool_for(kind)
        assert pool.connection_class is EngineConnection, kind


async def test_an_attempt_whose_socket_the_loop_lost_closes_it(
    silent: SilentServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psycopg's "connection socket closed" (an OSError while waiting) chains the cycle."""
    loop = asyncio.get_running_loop()
    add_reader = loop.add_reader

    def lost(fd: Any, callback: Any, *args: Any) -> None:
        # What epoll says of a descriptor libpq swapped under the loop.
        monkeypatch.setattr(loop, "add_reader", add_reader)
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(loop, "add_reader", lost)
    with pytest.raises(psycopg.OperationalError, match="socket closed"):
        await EngineConnection.connect(silent.url, connect_timeout=CONNECT_TIMEOUT_S)
    closed = await asyncio.to_thread(silent.closed_by_client.wait, CLOSED_WITHIN_S)
    assert closed, "the failed attempt's socket was left open"


async def test_an_exception_the_caller_is_handling_keeps_its_frames(silent: SilentServer) -> None:
    def failing() -> None:
        marker = "the caller's local"  # noqa: F841 (read back from the frame)
        raise ValueError("handled by the caller")

    try:
        failing()
    except ValueError as handled:
        with pytest.raises(psycopg.OperationalError):
            await EngineConnection.connect(silent.url, connect_timeout=CONNECT_TIMEOUT_S)
        trace = handled.__traceback__
        assert trace is not None and trace.tb_next is not None
        assert trace.tb_next.tb_frame.f_locals.get("marker") == "the caller's local"
