"""SQLite: messages to one run (``ow.signal``), kept until a wait of that run consumes them.

A send and a take are each one ``BEGIN IMMEDIATE`` transaction, so they are
serialised with each other and with the worker parking the run (whose
statement wakes it at once when a message for one of its waits is there).
"""

from __future__ import annotations

import sqlite3

from openworkflow.core import clock
from openworkflow.core import json as ow_json
from openworkflow.core.ids import new_id
from openworkflow.core.messages import (
    NOT_TAKEN,
    SendRunMessageParams,
    TakenMessage,
    TakeRunMessageParams,
    check_message_target,
)
from openworkflow.errors import WriteConflictError
from openworkflow.sqlite import message_queries as mq
from openworkflow.sqlite.base import Params, iso
from openworkflow.sqlite.connection import transaction
from openworkflow.sqlite.schedules import SqliteSchedules


class SqliteMessages(SqliteSchedules):
    """Messages to one run: sending (and waking a parked waiter) and taking them in order."""

    async def send_run_message(self, params: SendRunMessageParams) -> None:
        """Keep a message for one run and wake the run if it is parked waiting on its name."""
        values: Params = {
            "ns": self._namespace_id,
            "run_id": params.workflow_run_id,
            "id": new_id(),
            "signal": params.signal,
            "data": ow_json.dumps_or_none(params.data),
            "idempotency_key": params.idempotency_key,
        }

        def send(c: sqlite3.Connection) -> bool:
            values["now"] = iso(clock.now())
            return transaction(c, lambda: _send(c, values))

        if await self._run(send):
            self.notifier.notify_work_available()

    async def take_run_message(self, params: TakeRunMessageParams) -> TakenMessage:
        """Fenced: the message this attempt consumed already, else the oldest unconsumed one."""
        values = self._owned(
            params.workflow_run_id,
            params.worker_id,
            signal=params.signal,
            step_id=params.step_attempt_id,
        )

        def take(c: sqlite3.Connection) -> TakenMessage:
            values["now"] = iso(clock.now())
            return transaction(c, lambda: _take(c, values))

        return await self._run(take)


def _send(c: sqlite3.Connection, values: Params) -> bool:
    """In the send's transaction: refuse a missing or finished run, keep, wake; True if woken."""
    row = c.execute(mq.SELECT_RUN_STATUS, values).fetchone()
    check_message_target(values["run_id"], None if row is None else row[0])
    if not c.execute(mq.INSERT_RUN_MESSAGE, values).rowcount:
        return False  # a repeated idempotency key: the first send already woke the run
    return c.execute(mq.WAKE_MESSAGE_WAITER, values).rowcount > 0


def _take(c: sqlite3.Connection, values: Params) -> TakenMessage:
    """In the take's transaction: the fence, then the earlier message or the oldest one."""
    if c.execute(mq.SELECT_OWNED_RUN, values).fetchone() is None:
        raise WriteConflictError("Failed to take run message")
    row = c.execute(mq.SELECT_CONSUMED_MESSAGE, values).fetchone()
    if row is not None:
        return TakenMessage(found=True, data=ow_json.loads(row[0]))
    row = c.execute(mq.SELECT_NEXT_MESSAGE, values).fetchone()
    if row is None:
        return NOT_TAKEN
    c.execute(mq.CONSUME_MESSAGE, {**values, "id": row[0]})
    return TakenMessage(found=True, data=ow_json.loads(row[1]))
