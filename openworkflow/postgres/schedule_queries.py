"""PostgreSQL statements of schedules, rendered once per schema.

The ``schedules`` table is this port's; the TypeScript original neither reads
nor writes it. Every time is the database's ``NOW()``, so workers whose clocks
disagree still agree on which ticks are due.
"""

from __future__ import annotations

from functools import cache

from openworkflow.postgres.schema import render

SCHEDULE_COLUMNS = """s."name", s."workflow_name", s."version", s."cron", s."timezone", s."input",
  s."overlap", s."catchup", s."first_seen_at", s."last_tick_at", s."last_run_id", s."paused_at",
  s."updated_at" """
"""The columns :func:`~openworkflow.postgres.schedules.to_schedule` maps, in its order."""

# A known schedule keeps its first sighting, last tick, last run and pause.
UPSERT_SCHEDULE = """
INSERT INTO {schema}."schedules" (
  "namespace_id", "name", "workflow_name", "version", "cron", "timezone", "input", "overlap",
  "catchup", "first_seen_at", "updated_at"
)
VALUES (
  %(ns)s, %(name)s, %(workflow_name)s, %(version)s, %(cron)s, %(timezone)s, %(input)s,
  %(overlap)s, %(catchup)s, NOW(), NOW()
)
ON CONFLICT ("namespace_id", "name") DO UPDATE
SET "workflow_name" = EXCLUDED."workflow_name", "version" = EXCLUDED."version",
    "cron" = EXCLUDED."cron", "timezone" = EXCLUDED."timezone", "input" = EXCLUDED."input",
    "overlap" = EXCLUDED."overlap", "catchup" = EXCLUDED."catchup",
    "updated_at" = EXCLUDED."updated_at" """

# One row even when there is no schedule, so the clock reading always comes back.
SELECT_SCHEDULES = f"""
SELECT clock."now", {SCHEDULE_COLUMNS}
FROM (SELECT NOW() AS "now") clock
LEFT JOIN {{schema}}."schedules" s
  ON s."namespace_id" = %(ns)s AND (%(every)s OR s."name" = ANY(%(names)s))
ORDER BY s."name" """

# The row lock serialises every writer of one schedule's ticks; the row
# returned is its latest version, whatever committed while we waited.
LOCK_SCHEDULE = """
SELECT "last_tick_at", "paused_at", "workflow_name", "version", "input", "overlap",
  "last_run_id"
FROM {schema}."schedules"
WHERE "namespace_id" = %(ns)s AND "name" = %(name)s
FOR UPDATE"""

# A statement of its own after the lock (a fresh snapshot under READ
# COMMITTED), so it sees the run a rival created just before we got the lock.
SELECT_TICK_BLOCKERS = """
SELECT
  EXISTS (
    SELECT 1 FROM {schema}."paused_workflows"
    WHERE "namespace_id" = %(ns)s AND "workflow_name" = %(workflow_name)s
  ),
  EXISTS (
    SELECT 1 FROM {schema}."workflow_runs"
    WHERE "namespace_id" = %(ns)s AND "id" = %(last_run_id)s
      AND "status" IN ('pending', 'running', 'sleeping')
  )"""

RECORD_TICK = """
UPDATE {schema}."schedules"
SET "last_tick_at" = %(tick)s, "last_run_id" = COALESCE(%(run_id)s, "last_run_id")
WHERE "namespace_id" = %(ns)s AND "name" = %(name)s"""

PAUSE_SCHEDULE = f"""
UPDATE {{schema}}."schedules" s SET "paused_at" = COALESCE(s."paused_at", NOW())
WHERE s."namespace_id" = %(ns)s AND s."name" = %(name)s
RETURNING {SCHEDULE_COLUMNS}"""

# Ticks that fell during the pause are not caught up: served up to now.
RESUME_SCHEDULE = f"""
UPDATE {{schema}}."schedules" s
SET "paused_at" = NULL,
    "last_tick_at" = CASE WHEN s."paused_at" IS NULL THEN s."last_tick_at"
                          ELSE GREATEST(s."last_tick_at", NOW()) END
WHERE s."namespace_id" = %(ns)s AND s."name" = %(name)s
RETURNING {SCHEDULE_COLUMNS}"""

_TEMPLATES = {
    "upsert_schedule": UPSERT_SCHEDULE,
    "select_schedules": SELECT_SCHEDULES,
    "lock_schedule": LOCK_SCHEDULE,
    "select_tick_blockers": SELECT_TICK_BLOCKERS,
    "record_tick": RECORD_TICK,
    "pause_schedule": PAUSE_SCHEDULE,
    "resume_schedule": RESUME_SCHEDULE,
}


class ScheduleQueries:
    """The statements above rendered for one schema, ready to execute."""

    def __init__(self, schema: str) -> None:
        for name, template in _TEMPLATES.items():
            setattr(self, name, render(template, schema).encode())

    upsert_schedule: bytes
    select_schedules: bytes
    lock_schedule: bytes
    select_tick_blockers: bytes
    record_tick: bytes
    pause_schedule: bytes
    resume_schedule: bytes


@cache
def schedule_queries(schema: str) -> ScheduleQueries:
    """The schedule statements for ``schema`` (rendered once per schema)."""
    return ScheduleQueries(schema)
