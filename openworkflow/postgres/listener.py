"""LISTEN/NOTIFY wake-ups: an idle worker learns of new work within milliseconds.

Writes that make work available (a new run, a woken parent, a delivered
signal, a released lease), writes that finish a run and stream appends send
a notification on one channel; every backend object keeps one listening
connection and turns notifications into
:class:`~openworkflow.notifications.ChangeNotifier` wake-ups. Polling still
runs underneath, so a lost listener only costs latency: it reconnects with
backoff and then wakes everyone once, in case it missed something meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
from psycopg import sql

from openworkflow.event_loop import cancel_and_wait
from openworkflow.notifications import ChangeNotifier
from openworkflow.postgres.attempt import EngineConnection

logger = logging.getLogger("openworkflow.postgres")

_MAX_BACKOFF_SECONDS = 5.0


def work_payload(schema: str) -> str:
    """Notification payload: work may be available in ``schema``."""
    return f"w:{schema}"


def due_payload(schema: str) -> str:
    """Notification payload: a run in ``schema`` was parked until a later time."""
    return f"d:{schema}"


def finished_payload(schema: str, workflow_run_id: str, *, wakes_parent: bool) -> str:
    """Notification payload: a run finished (and maybe woke its parent)."""
    return f"f:{schema}:{workflow_run_id}:{1 if wakes_parent else 0}"


class NotificationListener:
    """One LISTEN connection feeding a :class:`ChangeNotifier`, reconnecting on loss."""

    def __init__(
        self,
        conninfo: str,
        connect_kwargs: dict[str, Any],
        channel: str,
        schema: str,
        notifier: ChangeNotifier,
    ) -> None:
        self._conninfo = conninfo
        self._connect_kwargs = connect_kwargs
        self._channel = channel
        self._schema = schema
        self._notifier = notifier
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        """Begin listening in the background (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="openworkflow-listen")

    async def stop(self, *, grace_s: float = 0.0) -> None:
        """Stop listening and close the connection.

        Args:
            grace_s: How long to let the task end on its own first: at event
                loop shutdown it was already cancelled, and cancelling it again
                while psycopg cancels its query on the server makes psycopg
                drop the connection with a warning.
        """
        task, self._task = self._task, None
        if task is None:
            return
        if grace_s > 0:
            await asyncio.wait([task], timeout=grace_s)
        await cancel_and_wait(task)

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the connection dropped or could not be made
                logger.debug("LISTEN connection lost (%s); reconnecting", type(error).__name__)
            self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)

    async def _listen(self) -> None:
        connection = await EngineConnection.connect(
            self._conninfo, autocommit=True, **self._connect_kwargs
        )
        async with connection:
            await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            self.connected.set()
            # Anything sent while we were not listening is lost: workers, running
            # passes (a cancel) and result() waiters look once.
            self._notifier.notify_external_change()
            await self._relay(connection)

    async def _relay(self, connection: psycopg.AsyncConnection[Any]) -> None:
        """Hand on notifications as they arrive; return only by raising (connection lost).

        psycopg's ``notifies()`` wakes the event loop every 100 ms while it
        waits (its interrupt check), and an idle worker did little else: most
        of its CPU. Here the loop watches the socket itself and reads what
        arrived through libpq (``pgconn``), so an idle listener costs nothing
        until the server sends something (a notification, or the end of the
        connection, which ``consume_input`` raises as an OperationalError).
        """
        loop = asyncio.get_running_loop()
        pgconn = connection.pgconn
        encoding = connection.info.encoding
        readable = asyncio.Event()
        loop.add_reader(pgconn.socket, readable.set)
        try:
            while True:
                await readable.wait()
                readable.clear()
                pgconn.consume_input()
                while (notification := pgconn.notifies()) is not None:
                    self._dispatch(notification.extra.decode(encoding))
        finally:
            loop.remove_reader(pgconn.socket)

    def _dispatch(self, payload: str) -> None:
        kind, _, rest = payload.partition(":")
        schema, _, detail = rest.partition(":")
        if schema != self._schema:
            return
        if kind == "w":
            self._notifier.notify_work_available()
        elif kind == "d":  # a run parked until later: idle workers re-read the next due time
            self._notifier.notify_due_later()
        elif kind == "s":  # a stream grew: wake its readers
            self._notifier.notify_run_changed(detail)
        elif kind == "f":
            run_id, _, wakes_parent = detail.rpartition(":")
            self._notifier.notify_runs_finished((run_id,))
            if wakes_parent == "1":
                self._notifier.notify_work_available()
