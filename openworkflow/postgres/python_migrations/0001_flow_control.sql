-- Priority: nullable with a default, so the original's inserts (which never
-- name it) store 0; readers treat NULL as 0 too, hence the COALESCE in the
-- indexes, which serve the claims' pending branches in claim order.
ALTER TABLE {schema}."workflow_runs" ADD COLUMN IF NOT EXISTS "priority" INTEGER DEFAULT 0;

-- Pending runs in claim order (a claim for any workflow; the front of the
-- queue for a routed claim).
CREATE INDEX IF NOT EXISTS "workflow_runs_pending_priority_idx"
ON {schema}."workflow_runs"
  ("namespace_id", (COALESCE("priority", 0)) DESC, "available_at", "created_at")
WHERE "status" = 'pending';

-- Pending runs of one (name, version) in claim order (a routed claim whose
-- workflows are rare in the queue). A NULL version is keyed as '' here and
-- told apart from '' by the claim itself.
CREATE INDEX IF NOT EXISTS "workflow_runs_pending_route_idx"
ON {schema}."workflow_runs" (
  "namespace_id", "workflow_name", (COALESCE("version", '')), (COALESCE("priority", 0)) DESC,
  "available_at", "created_at"
)
WHERE "status" = 'pending';

-- Workflow names whose runs Python workers do not claim (every version).
CREATE TABLE IF NOT EXISTS {schema}."paused_workflows" (
  "namespace_id" TEXT NOT NULL,
  "workflow_name" TEXT NOT NULL,
  "paused_at" TIMESTAMPTZ NOT NULL,
  PRIMARY KEY ("namespace_id", "workflow_name")
);

-- Live Python workers and the (name, version) pairs they run, as a JSON list
-- of [name, version]; a row is live until "expires_at".
CREATE TABLE IF NOT EXISTS {schema}."worker_registrations" (
  "namespace_id" TEXT NOT NULL,
  "worker_id" TEXT NOT NULL,
  "workflows" JSONB NOT NULL,
  "heartbeat_at" TIMESTAMPTZ NOT NULL,
  "expires_at" TIMESTAMPTZ NOT NULL,
  PRIMARY KEY ("namespace_id", "worker_id")
);
