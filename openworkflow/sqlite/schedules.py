"""SQLite: schedules: storing them, pausing them, and serving a tick atomically.

A tick is served in one ``BEGIN IMMEDIATE`` transaction (the database's write
lock), so racing workers, in this process or others, take turns and the later
ones see the ``last_tick_at`` the first one wrote. Times are the application
clock's, like every other SQLite timestamp.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from openworkflow.core import clock
from openworkflow.core import json as ow_json
from openworkflow.core.backend import RUN_IDEMPOTENCY_PERIOD_MS, CreateWorkflowRunParams
from openworkflow.core.rows import schedule_from_row
from openworkflow.core.schedule import tick_idempotency_key
from openworkflow.core.schedule_store import (
    ScheduleDefinition,
    ScheduledRunParams,
    ScheduledRunResult,
    ScheduleSnapshot,
    StoredSchedule,
)
from openworkflow.sqlite import queries as q
from openworkflow.sqlite import schedule_queries as sq
from openworkflow.sqlite.base import iso, to_run
from openworkflow.sqlite.connection import transaction
from openworkflow.sqlite.flow_control import SqliteFlowControl


def to_schedule(row: Sequence[Any]) -> StoredSchedule:
    """The schedule a row of ``SCHEDULE_COLUMNS`` holds."""
    return schedule_from_row(row, ow_json.loads, clock.from_iso)


class SqliteSchedules(SqliteFlowControl):
    """Schedule storage and the atomic creation of a tick's run."""

    async def upsert_schedules(self, definitions: Sequence[ScheduleDefinition]) -> None:
        """Store the schedules a worker declares (first sighting, last tick and pause kept)."""
        if not definitions:
            return
        now = iso(clock.now())
        rows = [
            {
                "ns": self._namespace_id,
                "name": definition.name,
                "workflow_name": definition.workflow_name,
                "version": definition.version,
                "cron": definition.schedule.cron,
                "timezone": definition.schedule.timezone,
                "input": ow_json.dumps_or_none(definition.input),
                "overlap": definition.schedule.overlap,
                "catchup": definition.schedule.catchup,
                "now": now,
            }
            for definition in definitions
        ]

        def upsert(c: sqlite3.Connection) -> None:
            for row in rows:
                c.execute(sq.UPSERT_SCHEDULE, row)

        await self._run(lambda c: transaction(c, lambda: upsert(c)))

    async def list_schedules(self, names: Sequence[str] | None = None) -> ScheduleSnapshot:
        """The stored schedules (only ``names`` if given), by name, with the application clock."""
        values = {
            "ns": self._namespace_id,
            "every": names is None,
            "names": ow_json.dumps(list(names or ())),
        }
        rows = await self._run(lambda c: c.execute(sq.SELECT_SCHEDULES, values).fetchall())
        return ScheduleSnapshot(now=clock.now(), schedules=[to_schedule(row) for row in rows])

    async def pause_schedule(self, name: str) -> StoredSchedule | None:
        """Stop the schedule's ticks (idempotent); None if no such schedule."""
        return await self._update_schedule(sq.PAUSE_SCHEDULE, name)

    async def resume_schedule(self, name: str) -> StoredSchedule | None:
        """Start the schedule's ticks again from now; None if no such schedule."""
        return await self._update_schedule(sq.RESUME_SCHEDULE, name)

    async def _update_schedule(self, statement: str, name: str) -> StoredSchedule | None:
        values = {"ns": self._namespace_id, "name": name, "now": iso(clock.now())}
        row = await self._run(lambda c: c.execute(statement, values).fetchone())
        return None if row is None else to_schedule(row)

    async def create_scheduled_run(self, params: ScheduledRunParams) -> ScheduledRunResult:
        """Create the tick's run unless it was served, in one immediate transaction."""
        result = await self._run(lambda c: transaction(c, lambda: self._serve_tick(c, params)))
        if result.run is not None:
            self.notifier.notify_work_available()
        return result

    def _serve_tick(self, c: sqlite3.Connection, params: ScheduledRunParams) -> ScheduledRunResult:
        values: dict[str, Any] = {
            "ns": self._namespace_id,
            "name": params.schedule_name,
            "tick": iso(params.tick),
            "run_id": None,
        }
        state = c.execute(sq.SELECT_TICK_STATE, values).fetchone()
        if state is None:
            return ScheduledRunResult(outcome="unknown")
        last_tick, paused_at, workflow_name, version, stored_input, overlap = state[:6]
        workflow_paused, previous_active = bool(state[6]), bool(state[7])
        if last_tick is not None and clock.from_iso(last_tick) >= params.tick:
            return ScheduledRunResult(outcome="already-served")
        if paused_at is not None or workflow_paused:
            c.execute(sq.RECORD_TICK, values)
            return ScheduledRunResult(outcome="skipped-paused")
        if overlap == "skip" and previous_active:
            c.execute(sq.RECORD_TICK, values)
            return ScheduledRunResult(outcome="skipped-overlap")
        run_values = self._insert_run_values(
            CreateWorkflowRunParams(
                workflow_name=workflow_name,
                version=version,
                idempotency_key=tick_idempotency_key(params.schedule_name, params.tick),
                priority=params.priority,
                scheduled_at=params.tick,
                concurrency_key=params.concurrency_key,
                concurrency_limit=params.concurrency_limit,
            )
        )
        run_values["input"] = stored_input  # stored JSON text, kept as is
        run_values["cutoff"] = iso(clock.now() - timedelta(milliseconds=RUN_IDEMPOTENCY_PERIOD_MS))
        row = c.execute(q.SELECT_RUN_BY_IDEMPOTENCY_KEY, run_values).fetchone()
        run = to_run(row or c.execute(q.INSERT_WORKFLOW_RUN, run_values).fetchone())
        c.execute(sq.RECORD_TICK, {**values, "run_id": run.id})
        return ScheduledRunResult(outcome="created", run=run)
