-- Events of one run (step.set_event / handle.get_event): the latest JSON value
-- a running workflow published under a key, for its callers. This port's own
-- table: a TypeScript worker never reads nor writes it.
CREATE TABLE IF NOT EXISTS "run_events" (
  "namespace_id" TEXT NOT NULL,
  "workflow_run_id" TEXT NOT NULL,
  "key" TEXT NOT NULL,
  "value" TEXT,
  "updated_at" TEXT NOT NULL,
  PRIMARY KEY ("namespace_id", "workflow_run_id", "key")
);
