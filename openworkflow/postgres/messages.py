"""PostgreSQL: messages to one run (``ow.signal``), kept until a wait of that run consumes them.

A send is one short ``READ COMMITTED`` transaction: lock the run (refusing a
missing or finished one), keep the message and wake the run if it is parked in
a wait on its name. A take is one fenced statement.
"""

from __future__ import annotations

from openworkflow.core.ids import new_id
from openworkflow.core.messages import (
    NOT_TAKEN,
    SendRunMessageParams,
    TakenMessage,
    TakeRunMessageParams,
    check_message_target,
)
from openworkflow.errors import WriteConflictError
from openworkflow.postgres.base import jsonb
from openworkflow.postgres.message_queries import MessageQueries, message_queries
from openworkflow.postgres.schedules import PostgresSchedules


class PostgresMessages(PostgresSchedules):
    """Messages to one run: sending (and waking a parked waiter) and taking them in order."""

    @property
    def _mq(self) -> MessageQueries:
        return message_queries(self._db.schema)

    async def send_run_message(self, params: SendRunMessageParams) -> None:
        """Keep a message for one run and wake the run if it is parked waiting on its name."""
        values = self._params(
            run_id=params.workflow_run_id,
            id=new_id(),
            signal=params.signal,
            data=jsonb(params.data),
            idempotency_key=params.idempotency_key,
        )
        async with self._connection() as connection, connection.transaction():
            row = await self._one(connection, self._mq.lock_message_run, values)
            check_message_target(params.workflow_run_id, None if row is None else row[0])
            await connection.execute(self._mq.insert_run_message, values)

    async def take_run_message(self, params: TakeRunMessageParams) -> TakenMessage:
        """Fenced: the message this attempt consumed already, else the oldest unconsumed one."""
        row = await self._fetchone(
            self._mq.take_run_message,
            self._owned(
                params.workflow_run_id,
                params.worker_id,
                signal=params.signal,
                step_id=params.step_attempt_id,
            ),
        )
        if row is None or not row[0]:
            raise WriteConflictError("Failed to take run message")
        return TakenMessage(found=True, data=row[2]) if row[1] else NOT_TAKEN
