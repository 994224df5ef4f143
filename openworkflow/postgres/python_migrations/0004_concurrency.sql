-- Concurrency limits. A limited run carries its key and limit, computed once
-- from the validated input when it is created; the original never writes
-- these columns, so its runs (and TypeScript workers) ignore limits.
ALTER TABLE {schema}."workflow_runs" ADD COLUMN IF NOT EXISTS "concurrency_key" TEXT;
ALTER TABLE {schema}."workflow_runs" ADD COLUMN IF NOT EXISTS "concurrency_limit" INTEGER;

-- One row per (workflow, key): the runs admitted into it, as (id, attempt)
-- pairs. Whether a holder still holds its slot is read from its run (running,
-- leased, still at that attempt), so finishing, failing, canceling, parking
-- or rescheduling a run frees its slot with no write here. A claim locks the
-- row (SKIP LOCKED) before it admits runs of the key, and PostgreSQL hands a
-- locking statement the row's newest version even when its snapshot is
-- older: that is why the holders live in this row and are not counted from
-- workflow_runs (a count would read the snapshot and over-admit).
CREATE TABLE IF NOT EXISTS {schema}."concurrency_keys" (
  "namespace_id" TEXT NOT NULL,
  "workflow_name" TEXT NOT NULL,
  "concurrency_key" TEXT NOT NULL,
  "holder_ids" TEXT[] NOT NULL DEFAULT ARRAY[]::TEXT[],
  "holder_attempts" INTEGER[] NOT NULL DEFAULT ARRAY[]::INTEGER[],
  "updated_at" TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  PRIMARY KEY ("namespace_id", "workflow_name", "concurrency_key")
);

-- Pending limited runs by key, in claim order: the claim's fair branch walks
-- the keys (a loose index scan) when the front of the queue is full keys.
CREATE INDEX IF NOT EXISTS "workflow_runs_pending_concurrency_idx"
ON {schema}."workflow_runs" (
  "namespace_id", "workflow_name", "concurrency_key", COALESCE("priority", 0) DESC,
  "available_at", "created_at"
)
WHERE "status" = 'pending' AND "concurrency_key" IS NOT NULL;
