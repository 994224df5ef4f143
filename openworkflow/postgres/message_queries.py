"""PostgreSQL statements of messages to one run (``ow.signal``), rendered once per schema.

The ``run_messages`` table is this port's; the TypeScript original neither
reads nor writes it.
"""

from __future__ import annotations

from functools import cache

from openworkflow.postgres.schema import render
from openworkflow.postgres.sql_fragments import AVAILABLE_NOW, NOTIFY_WORK, OWNED_RUN_LOCKED

# The send's first statement: the run's row lock orders the send against the
# worker parking the run. Parking needs the same lock, so either the run was
# parked before it (the next statement, a fresh snapshot, sees it parked and
# wakes it) or it parks after the send commits (and the reconcile that follows
# parking sees the message).
LOCK_MESSAGE_RUN = """
SELECT "status" FROM {schema}."workflow_runs"
WHERE "namespace_id" = %(ns)s AND "id" = %(run_id)s
FOR NO KEY UPDATE"""

# Keep the message (a repeated idempotency key stores nothing) and wake the
# run if it is parked in a wait on this name.
INSERT_RUN_MESSAGE = f"""
WITH inserted AS (
  INSERT INTO {{schema}}."run_messages" (
    "namespace_id", "id", "workflow_run_id", "signal", "data", "idempotency_key", "created_at"
  )
  VALUES (%(ns)s, %(id)s, %(run_id)s, %(signal)s, %(data)s, %(idempotency_key)s, NOW())
  ON CONFLICT ("namespace_id", "workflow_run_id", "signal", "idempotency_key")
    WHERE "idempotency_key" IS NOT NULL DO NOTHING
  RETURNING 1
)
UPDATE {{schema}}."workflow_runs" wr
SET {AVAILABLE_NOW}, "updated_at" = NOW()
WHERE wr."namespace_id" = %(ns)s AND wr."id" = %(run_id)s
  AND (wr."status" = 'sleeping'
       OR (wr."status" IN ('pending', 'running') AND wr."worker_id" IS NULL))
  AND EXISTS (SELECT 1 FROM inserted)
  AND EXISTS (
    SELECT 1 FROM {{schema}}."step_attempts" sa
    WHERE sa."namespace_id" = wr."namespace_id" AND sa."workflow_run_id" = wr."id"
      AND sa."kind" = 'signal-wait' AND sa."status" = 'running'
      AND sa."context"->>'signal' = %(signal)s
  )
RETURNING wr."id", {NOTIFY_WORK}"""

# Fenced by ownership. The message this attempt already consumed comes back
# (a pass that crashed after taking it); otherwise the oldest unconsumed one
# of (run, signal) is marked consumed by the attempt. SKIP LOCKED: a rival
# taker never waits for, nor gets, a message another statement is taking.
TAKE_RUN_MESSAGE = f"""
{OWNED_RUN_LOCKED},
earlier AS (
  SELECT m."data" FROM {{schema}}."run_messages" m, owned_workflow_run
  WHERE m."namespace_id" = %(ns)s AND m."workflow_run_id" = %(run_id)s
    AND m."consumed_by_step_attempt_id" = %(step_id)s
  LIMIT 1
),
next_message AS (
  SELECT m."id" FROM {{schema}}."run_messages" m, owned_workflow_run
  WHERE m."namespace_id" = %(ns)s AND m."workflow_run_id" = %(run_id)s
    AND m."signal" = %(signal)s AND m."consumed_by_step_attempt_id" IS NULL
    AND NOT EXISTS (SELECT 1 FROM earlier)
  ORDER BY m."created_at", m."id"
  LIMIT 1
  FOR UPDATE OF m SKIP LOCKED
),
taken AS (
  UPDATE {{schema}}."run_messages" m
  SET "consumed_by_step_attempt_id" = %(step_id)s, "consumed_at" = NOW()
  FROM next_message
  WHERE m."namespace_id" = %(ns)s AND m."id" = next_message."id"
  RETURNING m."data"
)
SELECT EXISTS (SELECT 1 FROM owned_workflow_run),
       EXISTS (SELECT 1 FROM earlier) OR EXISTS (SELECT 1 FROM taken),
       COALESCE((SELECT "data" FROM earlier), (SELECT "data" FROM taken))"""

_TEMPLATES = {
    "lock_message_run": LOCK_MESSAGE_RUN,
    "insert_run_message": INSERT_RUN_MESSAGE,
    "take_run_message": TAKE_RUN_MESSAGE,
}


class MessageQueries:
    """The statements above rendered for one schema, ready to execute."""

    def __init__(self, schema: str) -> None:
        for name, template in _TEMPLATES.items():
            setattr(self, name, render(template, schema).encode())

    lock_message_run: bytes
    insert_run_message: bytes
    take_run_message: bytes


@cache
def message_queries(schema: str) -> MessageQueries:
    """The message statements for ``schema`` (rendered once per schema)."""
    return MessageQueries(schema)
