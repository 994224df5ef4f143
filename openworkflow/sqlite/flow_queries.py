"""SQLite statements of flow control: priority, paused workflows, worker registrations.

The tables are this port's; the TypeScript original neither reads nor
writes them. The claims that honour them are in
:mod:`~openworkflow.sqlite.queries`.
"""

from __future__ import annotations

SET_WORKFLOW_RUN_PRIORITY = """
UPDATE "workflow_runs" SET "priority" = :priority, "updated_at" = :now
WHERE "namespace_id" = :ns AND "id" = :run_id AND "status" IN ('pending', 'running', 'sleeping')
RETURNING *"""

# A run goes back to the queue as if never claimed (its pass and lease
# undone), with its concurrency key if given, due at :available_at.
REQUEUE_WORKFLOW_RUN = """
UPDATE "workflow_runs"
SET "concurrency_key" = COALESCE(:concurrency_key, "concurrency_key"),
    "concurrency_limit" = COALESCE(:concurrency_limit, "concurrency_limit"),
    "status" = 'pending', "worker_id" = NULL, "available_at" = :available_at,
    "start_granted_at" = COALESCE(:start_granted_at, "start_granted_at"),
    "attempts" = MAX("attempts" - 1, 0),
    "started_at" = CASE WHEN "attempts" <= 1 THEN NULL ELSE "started_at" END,
    "updated_at" = :now
WHERE "namespace_id" = :ns AND "id" = :run_id AND "status" = 'running'
  AND "worker_id" = :worker_id
RETURNING *"""

# Pausing twice keeps the first pause's time.
UPSERT_PAUSED_WORKFLOW = """
INSERT INTO "paused_workflows" ("namespace_id", "workflow_name", "paused_at")
VALUES (:ns, :workflow_name, :now)
ON CONFLICT ("namespace_id", "workflow_name") DO UPDATE SET "paused_at" = "paused_at"
RETURNING "workflow_name", "paused_at" """

DELETE_PAUSED_WORKFLOW = """
DELETE FROM "paused_workflows" WHERE "namespace_id" = :ns AND "workflow_name" = :workflow_name"""

SELECT_PAUSED_WORKFLOWS = """
SELECT "workflow_name", "paused_at" FROM "paused_workflows" WHERE "namespace_id" = :ns
ORDER BY "workflow_name" """

UPSERT_WORKER_REGISTRATION = """
INSERT INTO "worker_registrations" (
  "namespace_id", "worker_id", "workflows", "heartbeat_at", "expires_at"
)
VALUES (:ns, :worker_id, :workflows, :now, :expires_at)
ON CONFLICT ("namespace_id", "worker_id") DO UPDATE
SET "workflows" = excluded."workflows", "heartbeat_at" = excluded."heartbeat_at",
    "expires_at" = excluded."expires_at" """

# Registrations long expired are dropped when a worker registers, so workers
# that died without unregistering do not pile up.
DELETE_FORGOTTEN_WORKER_REGISTRATIONS = """
DELETE FROM "worker_registrations" WHERE "namespace_id" = :ns AND "expires_at" < :forget_before"""

DELETE_WORKER_REGISTRATION = """
DELETE FROM "worker_registrations" WHERE "namespace_id" = :ns AND "worker_id" = :worker_id"""

# Rate limits (see the 0003 migration): token rows are created on first use.
INSERT_RATE_LIMIT_TOKENS = """
WITH RECURSIVE tokens(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM tokens WHERE n + 1 < :limit)
INSERT OR IGNORE INTO "rate_limit_tokens" ("namespace_id", "bucket", "rate_key", "token")
SELECT :ns, :bucket, :rate_key, n FROM tokens"""

# The free token with the oldest grant (NULLs, never granted, sort first).
SELECT_FREE_RATE_LIMIT_TOKEN = """
SELECT "token" FROM "rate_limit_tokens"
WHERE "namespace_id" = :ns AND "bucket" = :bucket AND "rate_key" = :rate_key
  AND "token" < :limit AND ("granted_at" IS NULL OR "granted_at" <= :free_before)
ORDER BY "granted_at" LIMIT 1"""

GRANT_RATE_LIMIT_TOKEN = """
UPDATE "rate_limit_tokens" SET "granted_at" = :now, "run_id" = :run_id
WHERE "namespace_id" = :ns AND "bucket" = :bucket AND "rate_key" = :rate_key
  AND "token" = :token"""

SELECT_OLDEST_RATE_LIMIT_GRANT = """
SELECT MIN("granted_at") FROM "rate_limit_tokens"
WHERE "namespace_id" = :ns AND "bucket" = :bucket AND "rate_key" = :rate_key
  AND "token" < :limit"""

# The token whose last grant (present or reserved) is oldest: the next start
# takes it at that grant + per, or now.
SELECT_OLDEST_RATE_LIMIT_TOKEN = """
SELECT "token", "granted_at" FROM "rate_limit_tokens"
WHERE "namespace_id" = :ns AND "bucket" = :bucket AND "rate_key" = :rate_key
  AND "token" < :limit
ORDER BY "granted_at" LIMIT 1"""

SET_WORKFLOW_RUN_SUCCESSOR = """
UPDATE "workflow_runs" SET "continued_as_id" = :successor_id, "updated_at" = :now
WHERE "namespace_id" = :ns AND "id" = :run_id AND "status" = 'running'
  AND "worker_id" = :worker_id
RETURNING *"""
