"""PostgreSQL: events of one run (``step.set_event`` / ``handle.get_event``).

A set is one statement: an upsert fenced by an ``EXISTS`` on the owned run.
"""

from __future__ import annotations

from openworkflow.core.events import GetRunEventParams, RunEvent, SetRunEventParams
from openworkflow.errors import WriteConflictError
from openworkflow.postgres.base import jsonb
from openworkflow.postgres.event_queries import EventQueries, event_queries
from openworkflow.postgres.messages import PostgresMessages


class PostgresEvents(PostgresMessages):
    """Run events: a fenced upsert by the owning worker, a read by any caller."""

    @property
    def _eq(self) -> EventQueries:
        return event_queries(self._db.schema)

    async def set_run_event(self, params: SetRunEventParams) -> None:
        """Fenced: store the key's value, overwriting an earlier one."""
        row = await self._fetchone(
            self._eq.set_run_event,
            self._owned(
                params.workflow_run_id, params.worker_id, key=params.key, value=jsonb(params.value)
            ),
        )
        if row is None or not row[0]:
            raise WriteConflictError("Failed to set run event")

    async def get_run_event(self, params: GetRunEventParams) -> RunEvent | None:
        """The key's current value, or None when it was never set."""
        row = await self._read_one(
            self._eq.get_run_event, self._params(run_id=params.workflow_run_id, key=params.key)
        )
        if row is None:
            return None
        return RunEvent(key=params.key, value=row[0], updated_at=row[1])

    async def list_run_events(self, workflow_run_id: str) -> list[RunEvent]:
        """Every event the run set, by key."""
        rows = await self._read_all(self._eq.list_run_events, self._params(run_id=workflow_run_id))
        return [RunEvent(key=row[0], value=row[1], updated_at=row[2]) for row in rows]
