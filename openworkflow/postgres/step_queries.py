"""The PostgreSQL statements on step attempts and signals, as templates.

Rendered for a schema with the others by :class:`openworkflow.postgres.queries.Queries`.
"""

from __future__ import annotations

from openworkflow.postgres.sql_fragments import (
    NOTIFY_FINISHED,
    RUN_OWNED,
    STEP_BY_ID,
)

# The claim fence, beside the worker id: the run's attempts as the writer's
# claim left it. Every claim bumps attempts, so a write a pass queued before
# its lease was lost is refused even when the same worker id claimed the run
# again (the worker id alone cannot tell the two passes apart). NULL fences on
# the worker id alone, as TypeScript workers (and older callers) do.
CLAIM_HELD = '(%(claim_attempt)s::integer IS NULL OR "attempts" = %(claim_attempt)s::integer)'

CLAIMED_RUN_LOCKED = f"""
WITH owned_workflow_run AS (
  SELECT 1 FROM {{schema}}."workflow_runs"
  WHERE {RUN_OWNED} AND {CLAIM_HELD}
  FOR NO KEY UPDATE
)"""

# Taken first in the transaction of a fenced run write whose own statement
# (in queries.py) fences on the worker id alone: it checks the claim and holds
# the row until the write commits.
LOCK_CLAIMED_RUN = f"""
SELECT 1 FROM {{schema}}."workflow_runs"
WHERE {RUN_OWNED} AND {CLAIM_HELD}
FOR NO KEY UPDATE"""

# In the two group-commit statements below, the items are materialized and
# the run's status is compared with a column of theirs, not a constant: each
# run is then found by its primary key. With ``wr."status" = 'running'`` the
# planner trusted statistics taken when few runs were running, walked every
# running run and compared it with every item (10,000 comparisons for a batch
# of 100 beside 100 running runs; 100 times that beside 10,000).

# Group commit of completions, each under its own fence (worker id and claim):
# the runs without a parent, completed in one statement. A run with a parent
# (or one not held) is left alone here; the caller completes it alone, which
# wakes the parent in the same transaction, or reports the conflict. An item
# without a claim (NULL) is fenced on its worker id alone.
COMPLETE_CLAIMED_RUNS_WITHOUT_PARENT = f"""
WITH item AS MATERIALIZED (
  SELECT *, 'running'::text AS "held_status" FROM unnest(
    %(namespace_ids)b::text[], %(run_ids)b::text[], %(worker_ids)b::text[], %(outputs)b::jsonb[],
    %(claim_attempts)b::integer[]
  ) AS i("namespace_id", "run_id", "worker_id", "output", "claim_attempt")
),
owned AS (
  SELECT wr."namespace_id" AS "owned_namespace_id", wr."id" AS "owned_id",
         item."output" AS "new_output"
  FROM item
  JOIN {{schema}}."workflow_runs" wr
    ON wr."namespace_id" = item."namespace_id" AND wr."id" = item."run_id"
   AND wr."status" = item."held_status" AND wr."worker_id" = item."worker_id"
   AND (item."claim_attempt" IS NULL OR wr."attempts" = item."claim_attempt")
   AND wr."parent_step_attempt_id" IS NULL
  ORDER BY wr."namespace_id", wr."id"
  FOR NO KEY UPDATE OF wr
),
-- In the same statement: a completed run keeps no attempt running.
closed_attempts AS (
  UPDATE {{schema}}."step_attempts" sa
  SET "status" = 'failed', "error" = %(closed_error)s, "finished_at" = NOW(),
      "updated_at" = NOW()
  FROM owned
  WHERE sa."namespace_id" = owned."owned_namespace_id" AND sa."workflow_run_id" = owned."owned_id"
    AND sa."status" = 'running'
)
UPDATE {{schema}}."workflow_runs"
SET "status" = 'completed', "output" = owned."new_output", "error" = NULL,
    "available_at" = NULL, "finished_at" = NOW(), "updated_at" = NOW()
FROM owned
WHERE "namespace_id" = owned."owned_namespace_id" AND "id" = owned."owned_id"
RETURNING {{schema}}."workflow_runs".*, {NOTIFY_FINISHED}"""

# Group commit: the step attempts of many executions in one statement. Each
# item carries its own fence (namespace, run, worker, claim); an item whose run
# is not held by its worker's claim is simply not inserted, and its caller is told.
# Runs are locked in id order so two batches never wait on each other in a
# cycle. Ids come from the caller, so results map back to items by id.
INSERT_STEP_ATTEMPTS = """
WITH item AS MATERIALIZED (
  SELECT *, 'running'::text AS "held_status" FROM unnest(
    %(namespace_ids)b::text[], %(ids)b::text[], %(run_ids)b::text[], %(worker_ids)b::text[],
    %(step_names)b::text[], %(kinds)b::text[], %(statuses)b::text[], %(configs)b::jsonb[],
    %(contexts)b::jsonb[], %(outputs)b::jsonb[], %(claim_attempts)b::integer[]
  ) AS i("namespace_id", "id", "run_id", "worker_id", "step_name", "kind", "status", "config",
         "context", "output", "claim_attempt")
),
owned AS (
  SELECT item.* FROM item
  JOIN {schema}."workflow_runs" wr
    ON wr."namespace_id" = item."namespace_id" AND wr."id" = item."run_id"
   AND wr."status" = item."held_status" AND wr."worker_id" = item."worker_id"
   AND (item."claim_attempt" IS NULL OR wr."attempts" = item."claim_attempt")
  ORDER BY wr."namespace_id", wr."id"
  FOR NO KEY UPDATE OF wr
)
INSERT INTO {schema}."step_attempts" (
  "namespace_id", "id", "workflow_run_id", "step_name", "kind", "status", "config",
  "context", "output", "started_at", "finished_at", "created_at", "updated_at"
)
SELECT "namespace_id", "id", "run_id", "step_name", "kind", "status", "config", "context",
       "output", NOW(), CASE WHEN "status" = 'completed' THEN NOW() END,
       date_trunc('milliseconds', NOW()), NOW()
FROM owned
RETURNING *"""

# A pass handing its run back deletes the function attempts it abandoned
# (fenced: only while it still owns the run; only attempts still running).
DELETE_ABANDONED_STEP_ATTEMPTS = f"""
{CLAIMED_RUN_LOCKED}
DELETE FROM {{schema}}."step_attempts" sa
USING owned_workflow_run
WHERE sa."namespace_id" = %(ns)s AND sa."workflow_run_id" = %(run_id)s
  AND sa."id" = ANY(%(step_ids)b::text[]) AND sa."status" = 'running' AND sa."kind" = 'function'"""

SELECT_STEP_ATTEMPT = """
SELECT * FROM {schema}."step_attempts" WHERE "namespace_id" = %(ns)s AND "id" = %(step_id)s"""

SET_STEP_CHILD = f"""
{CLAIMED_RUN_LOCKED}
UPDATE {{schema}}."step_attempts" sa
SET "child_workflow_run_namespace_id" = %(child_ns)s, "child_workflow_run_id" = %(child_id)s,
    "updated_at" = NOW()
FROM owned_workflow_run
WHERE sa."status" = 'running' AND {STEP_BY_ID}
RETURNING sa.*"""

# Completing twice keeps the first output (an acknowledgement lost after the
# commit is retried).
COMPLETE_STEP_ATTEMPT = f"""
{CLAIMED_RUN_LOCKED}
UPDATE {{schema}}."step_attempts" sa
SET "status" = 'completed',
    "output" = CASE WHEN sa."status" = 'running' THEN %(output)s ELSE sa."output" END,
    "error" = NULL,
    "finished_at" = COALESCE(sa."finished_at", NOW()),
    "updated_at" = CASE WHEN sa."status" = 'running' THEN NOW() ELSE sa."updated_at" END
FROM owned_workflow_run
WHERE sa."status" IN ('running', 'completed') AND {STEP_BY_ID}
RETURNING sa.*"""

FAIL_STEP_ATTEMPT = f"""
{CLAIMED_RUN_LOCKED}
UPDATE {{schema}}."step_attempts" sa
SET "status" = 'failed',
    "output" = NULL,
    "error" = CASE WHEN sa."status" = 'running' THEN %(error)s ELSE sa."error" END,
    "finished_at" = COALESCE(sa."finished_at", NOW()),
    "updated_at" = CASE WHEN sa."status" = 'running' THEN NOW() ELSE sa."updated_at" END
FROM owned_workflow_run
WHERE sa."status" IN ('running', 'failed') AND {STEP_BY_ID}
RETURNING sa.*"""

SELECT_SIGNAL_RUNS_BY_KEY = """
SELECT DISTINCT "workflow_run_id" FROM {schema}."workflow_signals"
WHERE "namespace_id" = %(ns)s AND "signal" = %(signal)s
  AND "sender_idempotency_key" = %(idempotency_key)s"""

# Deliver to every running wait on the signal whose run can still resume (rows
# an older engine or a TypeScript worker wrote may keep a finished run's wait
# 'running'); the
# unique index allows one delivery per wait.
DELIVER_SIGNAL = """
WITH waiters AS (
  SELECT sa."id", sa."workflow_run_id" FROM {schema}."step_attempts" sa
  WHERE sa."namespace_id" = %(ns)s AND sa."kind" = 'signal-wait' AND sa."status" = 'running'
    AND sa."context"->>'signal' = %(signal)s
    AND EXISTS (
      SELECT 1 FROM {schema}."workflow_runs" wr
      WHERE wr."namespace_id" = sa."namespace_id" AND wr."id" = sa."workflow_run_id"
        AND wr."status" IN ('pending', 'running', 'sleeping')
    )
  ORDER BY sa."id"
  FOR UPDATE OF sa
)
INSERT INTO {schema}."workflow_signals" (
  "namespace_id", "id", "signal", "data", "sender_idempotency_key", "workflow_run_id",
  "step_attempt_id", "created_at"
)
SELECT %(ns)s, gen_random_uuid(), %(signal)s, %(data)s, %(idempotency_key)s,
       waiters."workflow_run_id", waiters."id", NOW()
FROM waiters
ON CONFLICT ("namespace_id", "step_attempt_id") DO NOTHING
RETURNING "workflow_run_id" """

LOCK_RUNS = """
SELECT "id" FROM {schema}."workflow_runs"
WHERE "namespace_id" = %(ns)s AND "id" = ANY(%(run_ids)s)
ORDER BY "id"
FOR NO KEY UPDATE"""

SELECT_SIGNAL_DELIVERY = """
SELECT "data" FROM {schema}."workflow_signals"
WHERE "namespace_id" = %(ns)s AND "step_attempt_id" = %(step_id)s
LIMIT 1"""
