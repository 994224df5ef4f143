"""PostgreSQL statements of flow control: priority, paused workflows, worker registrations.

Templates like :mod:`~openworkflow.postgres.queries` (``{schema}`` filled
once, values bound by name). The tables are this port's; the TypeScript
original neither reads nor writes them.
"""

from __future__ import annotations

from openworkflow.postgres.sql_fragments import NOTIFY_WORK, RUN_OWNED

SET_WORKFLOW_RUN_PRIORITY = """
UPDATE {schema}."workflow_runs"
SET "priority" = %(priority)s, "updated_at" = NOW()
WHERE "namespace_id" = %(ns)s AND "id" = %(run_id)s
  AND "status" IN ('pending', 'running', 'sleeping')
RETURNING *"""

# A run goes back to the queue as if never claimed (its pass and lease
# undone), with its concurrency key if given, due at available_at (or now),
# and wakes the workers.
REQUEUE_WORKFLOW_RUN = f"""
UPDATE {{schema}}."workflow_runs"
SET "concurrency_key" = COALESCE(%(concurrency_key)s, "concurrency_key"),
    "concurrency_limit" = COALESCE(%(concurrency_limit)s, "concurrency_limit"),
    "status" = 'pending', "worker_id" = NULL,
    "available_at" = COALESCE(%(available_at)s, NOW()),
    "start_granted_at" = COALESCE(%(start_granted_at)s, "start_granted_at"),
    "attempts" = GREATEST("attempts" - 1, 0),
    "started_at" = CASE WHEN "attempts" <= 1 THEN NULL ELSE "started_at" END,
    "updated_at" = NOW()
WHERE {RUN_OWNED}
RETURNING *, {NOTIFY_WORK}"""

# A start's token (one statement): the token with the oldest grant, locked
# and stamped with the earliest instant its window allows: now, or a future
# reservation. A racing caller's lock is waited for (one row, so no
# deadlock), and locking re-reads the token at its newest grant, so each
# token's grants stay at least per apart: no window of length per holds more
# than limit grants, present or reserved. Also: how many tokens exist.
RESERVE_RATE_LIMIT_TOKEN = """
WITH pick AS MATERIALIZED (
  SELECT "token", "granted_at" FROM {schema}."rate_limit_tokens"
  WHERE "namespace_id" = %(ns)s AND "bucket" = %(bucket)s AND "rate_key" = %(rate_key)s
    AND "token" < %(limit)s
  ORDER BY "granted_at" NULLS FIRST
  LIMIT 1
  FOR UPDATE
), reserved AS (
  UPDATE {schema}."rate_limit_tokens" AS t
  SET "granted_at" = GREATEST(
        NOW(), COALESCE(pick."granted_at" + %(per_ms)s * INTERVAL '1 millisecond', NOW())),
      "run_id" = %(run_id)s
  FROM pick
  WHERE t."namespace_id" = %(ns)s AND t."bucket" = %(bucket)s AND t."rate_key" = %(rate_key)s
    AND t."token" = pick."token"
  RETURNING t."granted_at"
)
SELECT (SELECT "granted_at" FROM reserved), NOW()"""

SET_WORKFLOW_RUN_SUCCESSOR = f"""
UPDATE {{schema}}."workflow_runs"
SET "continued_as_id" = %(successor_id)s, "updated_at" = NOW()
WHERE {RUN_OWNED}
RETURNING *"""

# Pausing twice keeps the first pause's time.
UPSERT_PAUSED_WORKFLOW = """
INSERT INTO {schema}."paused_workflows" ("namespace_id", "workflow_name", "paused_at")
VALUES (%(ns)s, %(workflow_name)s, NOW())
ON CONFLICT ("namespace_id", "workflow_name")
DO UPDATE SET "paused_at" = {schema}."paused_workflows"."paused_at"
RETURNING "workflow_name", "paused_at" """

# Resuming wakes idle workers: the workflow's runs may be claimable now.
DELETE_PAUSED_WORKFLOW = f"""
DELETE FROM {{schema}}."paused_workflows"
WHERE "namespace_id" = %(ns)s AND "workflow_name" = %(workflow_name)s
RETURNING 1, {NOTIFY_WORK}"""

SELECT_PAUSED_WORKFLOWS = """
SELECT "workflow_name", "paused_at" FROM {schema}."paused_workflows"
WHERE "namespace_id" = %(ns)s
ORDER BY "workflow_name" """

# Registrations long expired are dropped on the way, so workers that died
# without unregistering do not pile up.
UPSERT_WORKER_REGISTRATION = """
WITH forgotten AS (
  DELETE FROM {schema}."worker_registrations"
  WHERE "namespace_id" = %(ns)s AND "expires_at" < NOW() - INTERVAL '1 day'
)
INSERT INTO {schema}."worker_registrations" (
  "namespace_id", "worker_id", "workflows", "heartbeat_at", "expires_at"
)
VALUES (
  %(ns)s, %(worker_id)s, %(workflows)s, NOW(), NOW() + %(ttl_ms)s * INTERVAL '1 millisecond'
)
ON CONFLICT ("namespace_id", "worker_id") DO UPDATE
SET "workflows" = EXCLUDED."workflows", "heartbeat_at" = EXCLUDED."heartbeat_at",
    "expires_at" = EXCLUDED."expires_at" """

DELETE_WORKER_REGISTRATION = """
DELETE FROM {schema}."worker_registrations"
WHERE "namespace_id" = %(ns)s AND "worker_id" = %(worker_id)s"""

# Rate limits (see the 0003 migration): token rows are created on first use.
INSERT_RATE_LIMIT_TOKENS = """
INSERT INTO {schema}."rate_limit_tokens" ("namespace_id", "bucket", "rate_key", "token")
SELECT %(ns)s, %(bucket)s, %(rate_key)s, token FROM generate_series(0, %(limit)s - 1) AS token
ON CONFLICT DO NOTHING"""

# One autocommit statement. The free token with the oldest grant is locked
# (SKIP LOCKED: racing callers take different tokens) and stamped NOW(); a
# token another caller stamped after our snapshot is re-read when locked, and
# fails the recheck. Refused, it answers when the oldest grant leaves the
# window, and how many tokens exist (fewer than the limit: create them).
ACQUIRE_RATE_LIMIT_TOKEN = """
WITH free AS MATERIALIZED (
  SELECT "token" FROM {schema}."rate_limit_tokens"
  WHERE "namespace_id" = %(ns)s AND "bucket" = %(bucket)s AND "rate_key" = %(rate_key)s
    AND "token" < %(limit)s
    AND ("granted_at" IS NULL OR "granted_at" <= NOW() - %(per_ms)s * INTERVAL '1 millisecond')
  ORDER BY "granted_at" NULLS FIRST
  LIMIT 1
  FOR UPDATE SKIP LOCKED
), granted AS (
  UPDATE {schema}."rate_limit_tokens" AS t SET "granted_at" = NOW(), "run_id" = %(run_id)s
  FROM free
  WHERE t."namespace_id" = %(ns)s AND t."bucket" = %(bucket)s AND t."rate_key" = %(rate_key)s
    AND t."token" = free."token"
  RETURNING t."granted_at"
), held AS (
  SELECT MIN("granted_at") AS oldest, COUNT(*) AS tokens FROM {schema}."rate_limit_tokens"
  WHERE "namespace_id" = %(ns)s AND "bucket" = %(bucket)s AND "rate_key" = %(rate_key)s
    AND "token" < %(limit)s
)
SELECT (SELECT "granted_at" FROM granted),
       held.oldest + %(per_ms)s * INTERVAL '1 millisecond', held.tokens, NOW()
FROM held"""


# Due pending runs in claim order, at most {limit}: one index range per
# priority level, highest first (a loose index scan over the levels of
# workflow_runs_pending_priority_idx, then ORDER BY available_at within the
# level), stopping as soon as enough runs are found. Not one walk ordered by
# (priority, available_at) filtered on the due time: with many finished runs
# (available_at NULL) the planner takes "pending and due" for a few rows and
# sorts the whole backlog found on the status index instead. Here each level
# is an equality on priority and a range on the due time, which only this
# index serves in order, and runs not due yet are never read. The rows come
# out level by level (the recursive CTE is read lazily, in the order it
# produces them): no ORDER BY over the levels, which would read them all.
_PENDING_WALK = """WITH RECURSIVE "priority_level"("priority") AS (
        (SELECT COALESCE(lv."priority", 0) FROM {{schema}}."workflow_runs" lv
         WHERE lv."namespace_id" = %(ns)s AND lv."status" = 'pending'
         ORDER BY COALESCE(lv."priority", 0) DESC LIMIT 1)
        UNION ALL
        SELECT (SELECT COALESCE(lv."priority", 0) FROM {{schema}}."workflow_runs" lv
                WHERE lv."namespace_id" = %(ns)s AND lv."status" = 'pending'
                  AND COALESCE(lv."priority", 0) < "priority_level"."priority"
                ORDER BY COALESCE(lv."priority", 0) DESC LIMIT 1)
        FROM "priority_level" WHERE "priority_level"."priority" IS NOT NULL)
      SELECT "in_level".* FROM "priority_level" CROSS JOIN LATERAL (
        SELECT {columns}
        FROM {{schema}}."workflow_runs" {run}
        WHERE {run}."namespace_id" = %(ns)s AND {run}."status" = 'pending'
          AND COALESCE({run}."priority", 0) = "priority_level"."priority"
          AND {run}."available_at" <= NOW(){filters}
        ORDER BY {run}."available_at", {run}."created_at"
        LIMIT {limit}{lock}) AS "in_level"
      LIMIT {limit}"""


def pending_walk(
    columns: str, limit: str, *, run: str = "r", filters: str = "", lock: bool = False
) -> str:
    """Due pending runs in claim order (see ``_PENDING_WALK``), ``{schema}`` left in.

    With ``lock``, each row is locked as it is found, skipping rows other
    workers hold (the walk goes on past them).
    """
    return _PENDING_WALK.format(
        columns=columns,
        limit=limit,
        run=run,
        filters=filters,
        lock="\n        FOR UPDATE SKIP LOCKED" if lock else "",
    )
