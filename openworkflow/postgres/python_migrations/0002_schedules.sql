-- The schedule tick a run serves (RunInfo.scheduled_at); NULL for other runs
-- and for every run the original creates.
ALTER TABLE {schema}."workflow_runs" ADD COLUMN IF NOT EXISTS "scheduled_at" TIMESTAMPTZ;

-- Cron schedules of the workflows Python workers run. "last_tick_at" is the
-- latest tick served: a tick's run is created only while it is earlier, under
-- a lock on the row, so every tick gets one run whatever the number of workers.
CREATE TABLE IF NOT EXISTS {schema}."schedules" (
  "namespace_id" TEXT NOT NULL,
  "name" TEXT NOT NULL,
  "workflow_name" TEXT NOT NULL,
  "version" TEXT,
  "cron" TEXT NOT NULL,
  "timezone" TEXT NOT NULL,
  "input" JSONB,
  "overlap" TEXT NOT NULL,
  "catchup" TEXT NOT NULL,
  "first_seen_at" TIMESTAMPTZ NOT NULL,
  "last_tick_at" TIMESTAMPTZ,
  "last_run_id" TEXT,
  "paused_at" TIMESTAMPTZ,
  "updated_at" TIMESTAMPTZ NOT NULL,
  PRIMARY KEY ("namespace_id", "name")
);
