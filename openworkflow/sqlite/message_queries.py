"""SQLite statements of messages to one run (``ow.signal``), bound by name.

The ``run_messages`` table is this port's; the TypeScript original neither
reads nor writes it. Each statement runs inside the caller's ``BEGIN
IMMEDIATE`` transaction, so the database's write lock orders senders, takers
and the worker parking the run.
"""

from __future__ import annotations

from openworkflow.sqlite.queries import RUN_OWNED

SELECT_RUN_STATUS = """
SELECT "status" FROM "workflow_runs" WHERE "namespace_id" = :ns AND "id" = :run_id"""

# A repeated idempotency key (same run, same name) hits the unique index: ignored.
INSERT_RUN_MESSAGE = """
INSERT OR IGNORE INTO "run_messages" (
  "namespace_id", "id", "workflow_run_id", "signal", "data", "idempotency_key", "created_at"
)
VALUES (:ns, :id, :run_id, :signal, :data, :idempotency_key, :now)"""

# A run parked in a wait on this name becomes available now.
WAKE_MESSAGE_WAITER = """
UPDATE "workflow_runs"
SET "available_at" = CASE WHEN "available_at" IS NULL OR "available_at" > :now THEN :now
                          ELSE "available_at" END,
    "updated_at" = :now
WHERE "namespace_id" = :ns AND "id" = :run_id
  AND ("status" = 'sleeping' OR ("status" IN ('pending', 'running') AND "worker_id" IS NULL))
  AND EXISTS (
    SELECT 1 FROM "step_attempts" sa
    WHERE sa."namespace_id" = :ns AND sa."workflow_run_id" = :run_id
      AND sa."kind" = 'signal-wait' AND sa."status" = 'running'
      AND json_extract(sa."context", '$.signal') = :signal
  )"""

SELECT_OWNED_RUN = f"""
SELECT 1 FROM "workflow_runs" WHERE {RUN_OWNED}"""

SELECT_CONSUMED_MESSAGE = """
SELECT "data" FROM "run_messages"
WHERE "namespace_id" = :ns AND "workflow_run_id" = :run_id
  AND "consumed_by_step_attempt_id" = :step_id
LIMIT 1"""

SELECT_NEXT_MESSAGE = """
SELECT "id", "data" FROM "run_messages"
WHERE "namespace_id" = :ns AND "workflow_run_id" = :run_id AND "signal" = :signal
  AND "consumed_by_step_attempt_id" IS NULL
ORDER BY "created_at", "id"
LIMIT 1"""

CONSUME_MESSAGE = """
UPDATE "run_messages" SET "consumed_by_step_attempt_id" = :step_id, "consumed_at" = :now
WHERE "namespace_id" = :ns AND "id" = :id AND "consumed_by_step_attempt_id" IS NULL"""
