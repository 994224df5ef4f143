"""Fragments shared by the PostgreSQL statements: fences, notifications, the deadline sweep."""

from __future__ import annotations

RUN_OWNED = """
  "namespace_id" = %(ns)s AND "id" = %(run_id)s AND "status" = 'running'
  AND "worker_id" = %(worker_id)s"""

OWNED_RUN_LOCKED = f"""
WITH owned_workflow_run AS (
  SELECT 1 FROM {{schema}}."workflow_runs"
  WHERE {RUN_OWNED}
  FOR NO KEY UPDATE
)"""

STEP_BY_ID = """
  sa."namespace_id" = %(ns)s AND sa."workflow_run_id" = %(run_id)s AND sa."id" = %(step_id)s"""

# A parked run becomes available now, unless it already is.
AVAILABLE_NOW = """
  "available_at" = CASE WHEN "available_at" IS NULL OR "available_at" > NOW() THEN NOW()
                        ELSE "available_at" END"""

# Notifications ride on RETURNING as a trailing column (rows map by position),
# so telling listeners costs no extra round trip.
NOTIFY_WORK = "pg_notify(%(channel)s, %(work_payload)s)"

# A run parked until a later time: idle workers re-read when the next run comes
# due (the parking worker may die or stay busy; nobody else knows the time).
NOTIFY_DUE_LATER = "pg_notify(%(channel)s, %(due_payload)s)"

NOTIFY_FINISHED = """pg_notify(%(channel)s, 'f:' || %(schema_name)s || ':' || "id" || ':'
  || CASE WHEN "parent_step_attempt_id" IS NULL THEN '0' ELSE '1' END)"""

# The head of every claim statement (claim_queries): runs past their deadline fail.
DEADLINE_SWEEP = f"""
-- Runs past their deadline are failed here, except those another transaction
-- holds right now (an owner recording a step): waiting for it would leave this
-- statement's snapshot blind to that step, which closed_attempts must see. The
-- next claim fails them.
WITH due_to_expire AS (
  SELECT "namespace_id", "id" FROM {{schema}}."workflow_runs"
  WHERE "namespace_id" = %(ns)s AND "status" IN ('pending', 'running', 'sleeping')
    AND "deadline_at" IS NOT NULL AND "deadline_at" <= NOW()
  FOR NO KEY UPDATE SKIP LOCKED
),
expired AS (
  UPDATE {{schema}}."workflow_runs"
  SET "status" = 'failed', "error" = %(deadline_error)s, "worker_id" = NULL,
      "available_at" = NULL, "finished_at" = NOW(), "updated_at" = NOW()
  -- Matched on both key columns of the (materialized) CTE, not on %(ns)s: with
  -- the namespace a constant, a planner whose statistics miss this namespace
  -- (new, or grown since the last ANALYZE) walks all its runs for each claim.
  WHERE ("namespace_id", "id") IN (SELECT "namespace_id", "id" FROM due_to_expire)
  RETURNING "namespace_id", "id", "parent_step_attempt_namespace_id", "parent_step_attempt_id"
),
-- A finished run keeps no attempt running (waits and sleeps included).
closed_attempts AS (
  UPDATE {{schema}}."step_attempts" sa
  SET "status" = 'failed', "error" = %(deadline_error)s, "finished_at" = NOW(),
      "updated_at" = NOW()
  FROM expired
  WHERE sa."namespace_id" = expired."namespace_id" AND sa."workflow_run_id" = expired."id"
    AND sa."status" = 'running'
),
-- Unlike the original, a child failed by its deadline wakes its parked parent too.
woken_parents AS (
  UPDATE {{schema}}."workflow_runs" parent
  SET "available_at" = CASE WHEN parent."available_at" IS NULL OR parent."available_at" > NOW()
                            THEN NOW() ELSE parent."available_at" END,
      "updated_at" = NOW()
  FROM expired, {{schema}}."step_attempts" sa
  WHERE expired."parent_step_attempt_id" IS NOT NULL
    AND sa."namespace_id" = expired."parent_step_attempt_namespace_id"
    AND sa."id" = expired."parent_step_attempt_id"
    AND sa."kind" = 'workflow' AND sa."status" = 'running'
    AND sa."child_workflow_run_namespace_id" = expired."namespace_id"
    AND sa."child_workflow_run_id" = expired."id"
    AND parent."namespace_id" = sa."namespace_id" AND parent."id" = sa."workflow_run_id"
    AND (parent."status" = 'sleeping'
         OR (parent."status" = 'running' AND parent."worker_id" IS NULL))
  RETURNING parent."id", {NOTIFY_WORK}
),"""
