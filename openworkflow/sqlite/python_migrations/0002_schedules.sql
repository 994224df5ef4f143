-- The schedule tick a run serves (RunInfo.scheduled_at); NULL for other runs
-- and for every run the original creates.
ALTER TABLE "workflow_runs" ADD COLUMN "scheduled_at" TEXT;

-- Cron schedules of the workflows Python workers run. "last_tick_at" is the
-- latest tick served: a tick's run is created only while it is earlier, inside
-- an immediate transaction, so every tick gets one run whatever the number of
-- workers.
CREATE TABLE IF NOT EXISTS "schedules" (
  "namespace_id" TEXT NOT NULL,
  "name" TEXT NOT NULL,
  "workflow_name" TEXT NOT NULL,
  "version" TEXT,
  "cron" TEXT NOT NULL,
  "timezone" TEXT NOT NULL,
  "input" TEXT,
  "overlap" TEXT NOT NULL,
  "catchup" TEXT NOT NULL,
  "first_seen_at" TEXT NOT NULL,
  "last_tick_at" TEXT,
  "last_run_id" TEXT,
  "paused_at" TEXT,
  "updated_at" TEXT NOT NULL,
  PRIMARY KEY ("namespace_id", "name")
);
