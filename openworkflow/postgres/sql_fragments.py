"""Fragments shared by the PostgreSQL statements: ownership fences and notifications."""

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
