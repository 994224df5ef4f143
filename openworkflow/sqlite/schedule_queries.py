"""SQLite statements of schedules.

The ``schedules`` table is this port's; the TypeScript original neither reads
nor writes it. Times are the application clock's, bound as ``:now``.
"""

from __future__ import annotations

SCHEDULE_COLUMNS = """"name", "workflow_name", "version", "cron", "timezone", "input", "overlap",
  "catchup", "first_seen_at", "last_tick_at", "last_run_id", "paused_at", "updated_at" """
"""The columns :func:`~openworkflow.sqlite.schedules.to_schedule` maps, in its order."""

# A known schedule keeps its first sighting, last tick, last run and pause.
UPSERT_SCHEDULE = """
INSERT INTO "schedules" (
  "namespace_id", "name", "workflow_name", "version", "cron", "timezone", "input", "overlap",
  "catchup", "first_seen_at", "updated_at"
)
VALUES (
  :ns, :name, :workflow_name, :version, :cron, :timezone, :input, :overlap, :catchup, :now, :now
)
ON CONFLICT ("namespace_id", "name") DO UPDATE
SET "workflow_name" = excluded."workflow_name", "version" = excluded."version",
    "cron" = excluded."cron", "timezone" = excluded."timezone", "input" = excluded."input",
    "overlap" = excluded."overlap", "catchup" = excluded."catchup",
    "updated_at" = excluded."updated_at" """

SELECT_SCHEDULES = f"""
SELECT {SCHEDULE_COLUMNS} FROM "schedules"
WHERE "namespace_id" = :ns AND (:every OR "name" IN (SELECT "value" FROM json_each(:names)))
ORDER BY "name" """

SELECT_TICK_STATE = """
SELECT s."last_tick_at", s."paused_at", s."workflow_name", s."version", s."input", s."overlap",
  EXISTS (
    SELECT 1 FROM "paused_workflows" p
    WHERE p."namespace_id" = s."namespace_id" AND p."workflow_name" = s."workflow_name"
  ),
  EXISTS (
    SELECT 1 FROM "workflow_runs" r
    WHERE r."namespace_id" = s."namespace_id" AND r."id" = s."last_run_id"
      AND r."status" IN ('pending', 'running', 'sleeping')
  )
FROM "schedules" s
WHERE s."namespace_id" = :ns AND s."name" = :name"""

RECORD_TICK = """
UPDATE "schedules"
SET "last_tick_at" = :tick, "last_run_id" = COALESCE(:run_id, "last_run_id")
WHERE "namespace_id" = :ns AND "name" = :name"""

PAUSE_SCHEDULE = f"""
UPDATE "schedules" SET "paused_at" = COALESCE("paused_at", :now)
WHERE "namespace_id" = :ns AND "name" = :name
RETURNING {SCHEDULE_COLUMNS}"""

# Ticks that fell during the pause are not caught up: served up to now
# (ISO strings with milliseconds order like the times they name).
RESUME_SCHEDULE = f"""
UPDATE "schedules"
SET "last_tick_at" = CASE WHEN "paused_at" IS NULL THEN "last_tick_at"
                          ELSE MAX(COALESCE("last_tick_at", :now), :now) END,
    "paused_at" = NULL
WHERE "namespace_id" = :ns AND "name" = :name
RETURNING {SCHEDULE_COLUMNS}"""
