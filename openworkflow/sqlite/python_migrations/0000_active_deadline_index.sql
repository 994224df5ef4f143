-- Lets every claim find runs past their deadline without reading every
-- active run. Before this ledger existed it was created unversioned, hence
-- IF NOT EXISTS.
CREATE INDEX IF NOT EXISTS "workflow_runs_active_deadline_at_idx"
ON "workflow_runs" ("namespace_id", "deadline_at")
WHERE "deadline_at" IS NOT NULL AND "status" IN ('pending', 'running', 'sleeping');
