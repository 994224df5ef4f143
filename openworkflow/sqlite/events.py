"""SQLite: events of one run (``step.set_event`` / ``handle.get_event``).

A set is one statement: an upsert fenced by an ``EXISTS`` on the owned run.
"""

from __future__ import annotations

import sqlite3

from openworkflow.core import clock
from openworkflow.core import json as ow_json
from openworkflow.core.events import GetRunEventParams, RunEvent, SetRunEventParams
from openworkflow.errors import WriteConflictError
from openworkflow.sqlite import event_queries as eq
from openworkflow.sqlite.base import iso
from openworkflow.sqlite.messages import SqliteMessages


class SqliteEvents(SqliteMessages):
    """Run events: a fenced upsert by the owning worker, a read by any caller."""

    async def set_run_event(self, params: SetRunEventParams) -> None:
        """Fenced: store the key's value, overwriting an earlier one."""
        values = self._owned(
            params.workflow_run_id,
            params.worker_id,
            key=params.key,
            value=ow_json.dumps_or_none(params.value),
        )

        def set_event(c: sqlite3.Connection) -> int:
            values["now"] = iso(clock.now())
            return c.execute(eq.SET_RUN_EVENT, values).rowcount

        if not await self._run(set_event):
            raise WriteConflictError("Failed to set run event")

    async def get_run_event(self, params: GetRunEventParams) -> RunEvent | None:
        """The key's current value, or None when it was never set."""
        values = {"ns": self._namespace_id, "run_id": params.workflow_run_id, "key": params.key}

        def get_event(c: sqlite3.Connection) -> RunEvent | None:
            row = c.execute(eq.GET_RUN_EVENT, values).fetchone()
            if row is None:
                return None
            return RunEvent(
                key=params.key,
                value=ow_json.loads(row[0]),
                updated_at=clock.from_iso(row[1]),
            )

        return await self._run(get_event)

    async def list_run_events(self, workflow_run_id: str) -> list[RunEvent]:
        """Every event the run set, by key."""
        values = {"ns": self._namespace_id, "run_id": workflow_run_id}

        def list_events(c: sqlite3.Connection) -> list[RunEvent]:
            return [
                RunEvent(key=row[0], value=ow_json.loads(row[1]), updated_at=clock.from_iso(row[2]))
                for row in c.execute(eq.LIST_RUN_EVENTS, values)
            ]

        return await self._run(list_events)
