"""PostgreSQL: schedules: storing them, pausing them, and serving a tick atomically.

A tick is served in one ``READ COMMITTED`` transaction that first locks the
schedule row (``FOR UPDATE``), so racing workers take turns and the later ones
see the ``last_tick_at`` the first one wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from openworkflow.core.backend import CreateWorkflowRunParams
from openworkflow.core.rows import schedule_from_row
from openworkflow.core.schedule import tick_idempotency_key
from openworkflow.core.schedule_store import (
    ScheduleDefinition,
    ScheduledRunParams,
    ScheduledRunResult,
    ScheduleSnapshot,
    StoredSchedule,
)
from openworkflow.postgres.base import Connection, Row, identity, jsonb, load_time, to_run
from openworkflow.postgres.flow_control import PostgresFlowControl
from openworkflow.postgres.schedule_queries import ScheduleQueries, schedule_queries


def to_schedule(row: Row) -> StoredSchedule:
    """The schedule a row of ``SCHEDULE_COLUMNS`` holds."""
    return schedule_from_row(row, identity, load_time)


class PostgresSchedules(PostgresFlowControl):
    """Schedule storage and the atomic creation of a tick's run."""

    @property
    def _sq(self) -> ScheduleQueries:
        return schedule_queries(self._db.schema)

    async def upsert_schedules(self, definitions: Sequence[ScheduleDefinition]) -> None:
        """Store the schedules a worker declares (first sighting, last tick and pause kept)."""
        if not definitions:
            return
        async with self._connection() as connection, connection.transaction():
            for definition in definitions:
                schedule = definition.schedule
                values = self._params(
                    name=definition.name,
                    workflow_name=definition.workflow_name,
                    version=definition.version,
                    cron=schedule.cron,
                    timezone=schedule.timezone,
                    input=jsonb(definition.input),
                    overlap=schedule.overlap,
                    catchup=schedule.catchup,
                )
                await connection.execute(self._sq.upsert_schedule, values)

    async def list_schedules(self, names: Sequence[str] | None = None) -> ScheduleSnapshot:
        """The stored schedules (only ``names`` if given), by name, with ``NOW()``."""
        values = self._params(every=names is None, names=list(names or ()))
        rows = await self._read_all(self._sq.select_schedules, values)
        return ScheduleSnapshot(
            now=load_time(rows[0][0]),
            schedules=[to_schedule(row[1:]) for row in rows if row[1] is not None],
        )

    async def pause_schedule(self, name: str) -> StoredSchedule | None:
        """Stop the schedule's ticks (idempotent); None if no such schedule."""
        row = await self._fetchone(self._sq.pause_schedule, self._params(name=name))
        return None if row is None else to_schedule(row)

    async def resume_schedule(self, name: str) -> StoredSchedule | None:
        """Start the schedule's ticks again from now; None if no such schedule."""
        row = await self._fetchone(self._sq.resume_schedule, self._params(name=name))
        return None if row is None else to_schedule(row)

    async def create_scheduled_run(self, params: ScheduledRunParams) -> ScheduledRunResult:
        """Create the tick's run unless it was served, under the schedule row's lock."""
        values = self._params(name=params.schedule_name, tick=params.tick, run_id=None)
        async with self._connection() as connection, connection.transaction():
            locked = await self._one(connection, self._sq.lock_schedule, values)
            if locked is None:
                return ScheduledRunResult(outcome="unknown")
            last_tick, paused_at, workflow_name, version, stored_input, overlap, last_run = locked
            if last_tick is not None and load_time(last_tick) >= params.tick:
                return ScheduledRunResult(outcome="already-served")
            values.update(workflow_name=workflow_name, last_run_id=last_run)
            blockers = await self._one(connection, self._sq.select_tick_blockers, values)
            workflow_paused, previous_active = blockers if blockers is not None else (False, False)
            if paused_at is not None or workflow_paused:
                await connection.execute(self._sq.record_tick, values)
                return ScheduledRunResult(outcome="skipped-paused")
            if overlap == "skip" and previous_active:
                await connection.execute(self._sq.record_tick, values)
                return ScheduledRunResult(outcome="skipped-overlap")
            run_params = CreateWorkflowRunParams(
                workflow_name=workflow_name,
                version=version,
                idempotency_key=tick_idempotency_key(params.schedule_name, params.tick),
                input=stored_input,
                priority=params.priority,
                scheduled_at=params.tick,
                concurrency_key=params.concurrency_key,
                concurrency_limit=params.concurrency_limit,
            )
            run = to_run(await self._insert_tick_run(connection, run_params))
            values["run_id"] = run.id
            await connection.execute(self._sq.record_tick, values)
        return ScheduledRunResult(outcome="created", run=run)

    async def _insert_tick_run(
        self, connection: Connection, params: CreateWorkflowRunParams
    ) -> Any:
        row = await self._insert_keyed_run(connection, self._create_run_values(params))
        if row is None:  # an INSERT ... RETURNING always returns its row
            raise RuntimeError("creating a scheduled run returned no row")
        return row
