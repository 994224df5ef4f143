-- Concurrency limits. A limited run carries its key and limit, computed once
-- from the validated input when it is created; the original never writes
-- these columns, so its runs (and TypeScript workers) ignore limits.
ALTER TABLE "workflow_runs" ADD COLUMN "concurrency_key" TEXT;
ALTER TABLE "workflow_runs" ADD COLUMN "concurrency_limit" INTEGER;

-- The runs holding a key's slots (running and leased), counted by the claim
-- under its write lock; SQLite has one writer, so the count is current.
CREATE INDEX IF NOT EXISTS "workflow_runs_concurrency_holders_idx"
ON "workflow_runs" ("namespace_id", "workflow_name", "concurrency_key")
WHERE "status" = 'running' AND "worker_id" IS NOT NULL AND "concurrency_key" IS NOT NULL;

-- Pending limited runs by key, in claim order: the claim's fair walk over
-- keys when the front of the queue is full keys.
CREATE INDEX IF NOT EXISTS "workflow_runs_pending_concurrency_idx"
ON "workflow_runs" (
  "namespace_id", "workflow_name", "concurrency_key", COALESCE("priority", 0) DESC,
  "available_at", "created_at"
)
WHERE "status" = 'pending' AND "concurrency_key" IS NOT NULL;
