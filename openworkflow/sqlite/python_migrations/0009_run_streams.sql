-- Streams of one run (step.stream / handle.stream): ordered JSON items a
-- running workflow appends under a key, read by callers from the first. "seq"
-- is the item's position (1, 2, 3...), so a replay re-appending a position is a
-- no-op. This port's own table: a TypeScript worker never reads nor writes it.
CREATE TABLE IF NOT EXISTS "run_streams" (
  "namespace_id" TEXT NOT NULL,
  "workflow_run_id" TEXT NOT NULL,
  "key" TEXT NOT NULL,
  "seq" INTEGER NOT NULL,
  "value" TEXT,
  "created_at" TEXT NOT NULL,
  PRIMARY KEY ("namespace_id", "workflow_run_id", "key", "seq")
);
