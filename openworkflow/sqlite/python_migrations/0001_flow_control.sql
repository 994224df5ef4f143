-- Priority: nullable with a default, so the original's inserts (which never
-- name it) store 0; readers treat NULL as 0 too, hence the COALESCE in the
-- indexes, which serve the claims' pending branches in claim order.
ALTER TABLE "workflow_runs" ADD COLUMN "priority" INTEGER DEFAULT 0;

-- Pending runs in claim order (a claim for any workflow; the front of the
-- queue for a routed claim).
CREATE INDEX IF NOT EXISTS "workflow_runs_pending_priority_idx"
ON "workflow_runs" ("namespace_id", COALESCE("priority", 0) DESC, "available_at", "created_at")
WHERE "status" = 'pending';

-- Pending runs of one (name, version) in claim order (a routed claim whose
-- workflows are rare in the queue).
CREATE INDEX IF NOT EXISTS "workflow_runs_pending_route_idx"
ON "workflow_runs" (
  "namespace_id", "workflow_name", "version", COALESCE("priority", 0) DESC, "available_at",
  "created_at"
)
WHERE "status" = 'pending';

-- Workflow names whose runs Python workers do not claim (every version).
CREATE TABLE IF NOT EXISTS "paused_workflows" (
  "namespace_id" TEXT NOT NULL,
  "workflow_name" TEXT NOT NULL,
  "paused_at" TEXT NOT NULL,
  PRIMARY KEY ("namespace_id", "workflow_name")
);

-- Live Python workers and the (name, version) pairs they run, as a JSON list
-- of [name, version]; a row is live until "expires_at".
CREATE TABLE IF NOT EXISTS "worker_registrations" (
  "namespace_id" TEXT NOT NULL,
  "worker_id" TEXT NOT NULL,
  "workflows" TEXT NOT NULL,
  "heartbeat_at" TEXT NOT NULL,
  "expires_at" TEXT NOT NULL,
  PRIMARY KEY ("namespace_id", "worker_id")
);
