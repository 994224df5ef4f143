"""Every SQL statement of the PostgreSQL backend, as templates.

``{schema}`` is filled once per backend with the quoted, validated schema
name (see :class:`Queries`); values are always bound as named parameters.
Every timestamp comes from the database clock (``NOW()``). Writes that
advance a run are fenced on ``status = 'running' AND worker_id = <caller>``;
step writes first lock the owning run row (``FOR NO KEY UPDATE``) so a lease
transfer and a stale worker's step write are serialised.
"""

from __future__ import annotations

from openworkflow.postgres.claim_queries import (
    CLAIM_ROUTED_WORKFLOW_RUNS,
    CLAIM_UNLIMITED_ROUTED_WORKFLOW_RUNS,
    CLAIM_UNLIMITED_WORKFLOW_RUNS,
    CLAIM_UNROUTED_WORKFLOW_RUNS,
    CLAIM_WORKFLOW_RUNS,
)
from openworkflow.postgres.create_queries import INSERT_WORKFLOW_RUNS, LOCK_IDEMPOTENCY_SCOPES
from openworkflow.postgres.flow_queries import (
    ACQUIRE_RATE_LIMIT_TOKEN,
    DELETE_PAUSED_WORKFLOW,
    DELETE_WORKER_REGISTRATION,
    INSERT_RATE_LIMIT_TOKENS,
    REQUEUE_WORKFLOW_RUN,
    RESERVE_RATE_LIMIT_TOKEN,
    SELECT_PAUSED_WORKFLOWS,
    SET_WORKFLOW_RUN_PRIORITY,
    SET_WORKFLOW_RUN_SUCCESSOR,
    UPSERT_PAUSED_WORKFLOW,
    UPSERT_WORKER_REGISTRATION,
)
from openworkflow.postgres.schema import render
from openworkflow.postgres.sql_fragments import (
    AVAILABLE_NOW,
    NOTIFY_DUE_LATER,
    NOTIFY_FINISHED,
    NOTIFY_WORK,
    RUN_OWNED,
)
from openworkflow.postgres.step_queries import (
    COMPLETE_STEP_ATTEMPT,
    DELETE_ABANDONED_STEP_ATTEMPTS,
    DELIVER_SIGNAL,
    FAIL_STEP_ATTEMPT,
    INSERT_STEP_ATTEMPTS,
    LOCK_RUNS,
    SELECT_SIGNAL_DELIVERY,
    SELECT_SIGNAL_RUNS_BY_KEY,
    SELECT_STEP_ATTEMPT,
    SET_STEP_CHILD,
)

NOTIFY_CHANNEL = "openworkflow"

INSERT_WORKFLOW_RUN = f"""
INSERT INTO {{schema}}."workflow_runs" (
  "namespace_id", "id", "workflow_name", "version", "status", "idempotency_key",
  "config", "context", "input", "attempts", "parent_step_attempt_namespace_id",
  "parent_step_attempt_id", "available_at", "deadline_at", "created_at", "updated_at",
  "priority", "scheduled_at", "concurrency_key", "concurrency_limit"
)
VALUES (
  %(ns)s, %(run_id)s, %(workflow_name)s, %(version)s, 'pending', %(idempotency_key)s,
  %(config)s, %(context)s, %(input)s, 0, %(parent_ns)s, %(parent_id)s,
  COALESCE(%(available_at)s, NOW()), %(deadline_at)s, date_trunc('milliseconds', NOW()), NOW(),
  %(priority)s, %(scheduled_at)s, %(concurrency_key)s, %(concurrency_limit)s
)
RETURNING *, {NOTIFY_WORK}"""

LOCK_IDEMPOTENCY_SCOPE = "SELECT pg_advisory_xact_lock(hashtextextended(%(scope)s, 0::bigint))"

SELECT_RUN_BY_IDEMPOTENCY_KEY = """
SELECT * FROM {schema}."workflow_runs"
WHERE "namespace_id" = %(ns)s AND "workflow_name" = %(workflow_name)s
  AND "idempotency_key" = %(idempotency_key)s
  AND "created_at" >= NOW() - %(period_ms)s * INTERVAL '1 millisecond'
ORDER BY "created_at" ASC, "id" ASC
LIMIT 1"""

SELECT_WORKFLOW_RUN = """
SELECT * FROM {schema}."workflow_runs" WHERE "namespace_id" = %(ns)s AND "id" = %(run_id)s"""

COUNT_WORKFLOW_RUNS = """
SELECT "status", COUNT(*) FROM {schema}."workflow_runs"
WHERE "namespace_id" = %(ns)s GROUP BY "status" """

COUNT_STEP_ATTEMPTS = """
SELECT "status", COUNT(*) FROM {schema}."step_attempts"
WHERE "namespace_id" = %(ns)s GROUP BY "status" """

EXTEND_LEASE = f"""
UPDATE {{schema}}."workflow_runs"
SET "available_at" = NOW() + %(lease_ms)s * INTERVAL '1 millisecond', "updated_at" = NOW()
WHERE {RUN_OWNED}
-- clock_timestamp(): the database's clock as the reply leaves (db_clock).
RETURNING *, clock_timestamp()"""

SLEEP_WORKFLOW_RUN = f"""
UPDATE {{schema}}."workflow_runs"
SET "status" = 'running', "available_at" = %(available_at)s, "worker_id" = NULL,
    "updated_at" = NOW()
WHERE "namespace_id" = %(ns)s AND "id" = %(run_id)s
  AND "status" NOT IN ('succeeded', 'completed', 'failed', 'canceled')
  AND "worker_id" = %(worker_id)s
  AND (%(claim_attempt)s::integer IS NULL OR "attempts" = %(claim_attempt)s::integer)
RETURNING *, CASE WHEN "available_at" <= NOW() THEN {NOTIFY_WORK} ELSE {NOTIFY_DUE_LATER} END"""

# Run after parking, as its own statement (a fresh snapshot): if a wait was
# answered while the run was still owned (a child ended, a signal was delivered,
# a message to the run is there for a wait), the answer's wake-up saw an owned
# run and did nothing, so the run becomes available now.
RECONCILE_PARKED_RUN = f"""
UPDATE {{schema}}."workflow_runs" wr
SET {AVAILABLE_NOW}, "updated_at" = NOW()
WHERE wr."namespace_id" = %(ns)s AND wr."id" = %(run_id)s AND wr."status" = 'running'
  AND wr."worker_id" IS NULL
  AND (
    EXISTS (
      SELECT 1 FROM {{schema}}."step_attempts" sa
      JOIN {{schema}}."workflow_runs" child
        ON child."namespace_id" = sa."child_workflow_run_namespace_id"
        AND child."id" = sa."child_workflow_run_id"
      WHERE sa."namespace_id" = wr."namespace_id" AND sa."workflow_run_id" = wr."id"
        AND sa."kind" = 'workflow' AND sa."status" = 'running'
        AND child."status" IN ('completed', 'succeeded', 'failed', 'canceled')
    )
    OR EXISTS (
      SELECT 1 FROM {{schema}}."step_attempts" sa
      JOIN {{schema}}."workflow_signals" ws
        ON ws."namespace_id" = sa."namespace_id" AND ws."step_attempt_id" = sa."id"
      WHERE sa."namespace_id" = wr."namespace_id" AND sa."workflow_run_id" = wr."id"
        AND sa."kind" = 'signal-wait' AND sa."status" = 'running'
    )
    OR EXISTS (
      SELECT 1 FROM {{schema}}."step_attempts" sa
      JOIN {{schema}}."run_messages" m
        ON m."namespace_id" = sa."namespace_id" AND m."workflow_run_id" = sa."workflow_run_id"
        AND m."signal" = sa."context"->>'signal' AND m."consumed_by_step_attempt_id" IS NULL
      WHERE sa."namespace_id" = wr."namespace_id" AND sa."workflow_run_id" = wr."id"
        AND sa."kind" = 'signal-wait' AND sa."status" = 'running'
    )
  )
RETURNING wr.*, {NOTIFY_WORK}"""

COMPLETE_WORKFLOW_RUN = f"""
UPDATE {{schema}}."workflow_runs"
SET "status" = 'completed', "output" = %(output)s, "error" = NULL,
    "worker_id" = %(worker_id)s, "available_at" = NULL, "finished_at" = NOW(),
    "updated_at" = NOW()
WHERE {RUN_OWNED}
RETURNING *, {NOTIFY_FINISHED}"""

SELECT_OWNED_RUN_FOR_FAILURE = f"""
SELECT NOW(), "attempts", "deadline_at" FROM {{schema}}."workflow_runs"
WHERE {RUN_OWNED}
FOR NO KEY UPDATE"""

# A run sent back to pending until a retry (a step's or the run's backoff) tells
# idle workers with the due-later notification, as a parked sleep does: the
# worker that failed may die or stay busy, and nobody else knows the due time.
# One more trailing column (rows map by position): no extra round trip.
_DUE_LATER_IF_RETRYING = f"""
  , CASE WHEN "status" = 'pending' AND "available_at" > NOW() THEN {NOTIFY_DUE_LATER} END"""

FAIL_WORKFLOW_RUN = f"""
UPDATE {{schema}}."workflow_runs"
SET "status" = %(status)s, "available_at" = %(available_at)s, "finished_at" = %(finished_at)s,
    "error" = %(error)s, "worker_id" = NULL, "started_at" = NULL, "updated_at" = NOW()
WHERE {RUN_OWNED}
RETURNING *, CASE WHEN "status" = 'failed' THEN {NOTIFY_FINISHED} END{_DUE_LATER_IF_RETRYING}"""

RESCHEDULE_AFTER_FAILED_STEP = f"""
UPDATE {{schema}}."workflow_runs"
SET "status" = 'pending', "available_at" = %(available_at)s, "finished_at" = NULL,
    "error" = %(error)s, "worker_id" = NULL, "started_at" = NULL, "updated_at" = NOW()
WHERE {RUN_OWNED}
RETURNING *{_DUE_LATER_IF_RETRYING}"""

CANCEL_WORKFLOW_RUN = f"""
UPDATE {{schema}}."workflow_runs"
SET "status" = 'canceled', "worker_id" = NULL, "available_at" = NULL, "finished_at" = NOW(),
    "updated_at" = NOW()
WHERE "namespace_id" = %(ns)s AND "id" = %(run_id)s
  AND "status" IN ('pending', 'running', 'sleeping')
RETURNING *, {NOTIFY_FINISHED}"""

# Cancel, failure for good and a child's completion run this in their
# transaction (the claim's deadline sweep and the group-committed completion
# fold the same update into their statement): the finished run's open attempts,
# waits and sleeps included, are failed with a reason.
CLOSE_OPEN_STEP_ATTEMPTS = """
UPDATE {schema}."step_attempts"
SET "status" = 'failed', "error" = %(closed_error)s, "finished_at" = NOW(), "updated_at" = NOW()
WHERE "namespace_id" = %(ns)s AND "workflow_run_id" = %(run_id)s AND "status" = 'running'"""

# Retry: drop what must run again: failed attempts (final failures and the
# waits a terminal transition closed) and running function attempts (rows an
# older engine or a TypeScript worker left); completed steps stay memoized.
DELETE_ATTEMPTS_TO_RERUN = """
DELETE FROM {schema}."step_attempts"
WHERE "namespace_id" = %(ns)s AND "workflow_run_id" = %(run_id)s
  AND ("status" = 'failed' OR ("status" = 'running' AND "kind" = 'function'))"""

RETRY_WORKFLOW_RUN = f"""
UPDATE {{schema}}."workflow_runs"
SET "status" = 'pending', "attempts" = 0, "available_at" = NOW(), "output" = NULL,
    "error" = NULL, "worker_id" = NULL, "started_at" = NULL, "finished_at" = NULL,
    "updated_at" = NOW()
WHERE "namespace_id" = %(ns)s AND "id" = %(run_id)s AND "status" IN ('failed', 'canceled')
RETURNING *, {NOTIFY_WORK}"""

# Waking a parent: lock its row by id first (this returns the newest version
# even if it changed after our snapshot), then update it in a new statement.
# A parent parking concurrently either waits for us or is seen parked.
SELECT_WAITING_PARENT_FOR_UPDATE = """
SELECT wr."id" FROM {schema}."workflow_runs" wr
WHERE wr."namespace_id" = %(parent_ns)s
  AND wr."id" = (
    SELECT sa."workflow_run_id" FROM {schema}."step_attempts" sa
    WHERE sa."namespace_id" = %(parent_ns)s AND sa."id" = %(parent_step_id)s
      AND sa."kind" = 'workflow' AND sa."status" = 'running'
      AND sa."child_workflow_run_namespace_id" = %(child_ns)s
      AND sa."child_workflow_run_id" = %(child_id)s
  )
FOR NO KEY UPDATE"""

WAKE_PARKED_RUNS = f"""
UPDATE {{schema}}."workflow_runs"
SET {AVAILABLE_NOW}, "updated_at" = NOW()
WHERE "namespace_id" = %(ns)s AND "id" = ANY(%(run_ids)s)
  AND ("status" = 'sleeping' OR ("status" IN ('pending', 'running') AND "worker_id" IS NULL))
RETURNING "id", {NOTIFY_WORK}"""

LIST_PAGE = """
SELECT * FROM {schema}.{table} WHERE {where} ORDER BY "created_at" {order}, "id" {order}
LIMIT %(limit)s"""


# Runs whose id starts with a prefix (escaped LIKE pattern): under a "C" collation the
# planner turns it into a range on the primary key (namespace, id); under any other
# collation it is still correct, filtering the namespace's part of that index.
SELECT_WORKFLOW_RUNS_BY_ID_PREFIX = r"""
SELECT * FROM {schema}."workflow_runs"
WHERE "namespace_id" = %(ns)s AND "id" LIKE %(pattern)s ESCAPE '\'
ORDER BY "id"
LIMIT %(limit)s"""


class Queries:
    """The statements above rendered for one schema, ready to execute."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        for name, template in _TEMPLATES.items():
            setattr(self, name, render(template, schema).encode())

    insert_workflow_run: bytes
    insert_workflow_runs: bytes
    lock_idempotency_scopes: bytes
    select_run_by_idempotency_key: bytes
    select_workflow_run: bytes
    count_workflow_runs: bytes
    count_step_attempts: bytes
    claim_workflow_runs: bytes
    claim_unlimited_workflow_runs: bytes
    claim_routed_workflow_runs: bytes
    claim_unlimited_routed_workflow_runs: bytes
    claim_unrouted_workflow_runs: bytes
    set_workflow_run_priority: bytes
    requeue_workflow_run: bytes
    set_workflow_run_successor: bytes
    reserve_rate_limit_token: bytes
    upsert_paused_workflow: bytes
    delete_paused_workflow: bytes
    select_paused_workflows: bytes
    upsert_worker_registration: bytes
    delete_worker_registration: bytes
    insert_rate_limit_tokens: bytes
    acquire_rate_limit_token: bytes
    extend_lease: bytes
    sleep_workflow_run: bytes
    reconcile_parked_run: bytes
    complete_workflow_run: bytes
    select_owned_run_for_failure: bytes
    fail_workflow_run: bytes
    reschedule_after_failed_step: bytes
    cancel_workflow_run: bytes
    retry_workflow_run: bytes
    close_open_step_attempts: bytes
    delete_attempts_to_rerun: bytes
    select_waiting_parent_for_update: bytes
    wake_parked_runs: bytes
    insert_step_attempts: bytes
    select_step_attempt: bytes
    delete_abandoned_step_attempts: bytes
    set_step_child: bytes
    complete_step_attempt: bytes
    fail_step_attempt: bytes
    select_signal_runs_by_key: bytes
    deliver_signal: bytes
    lock_runs: bytes
    lock_idempotency_scope: bytes
    select_signal_delivery: bytes
    select_workflow_runs_by_id_prefix: bytes


_TEMPLATES = {
    "insert_workflow_run": INSERT_WORKFLOW_RUN,
    "insert_workflow_runs": INSERT_WORKFLOW_RUNS,
    "lock_idempotency_scopes": LOCK_IDEMPOTENCY_SCOPES,
    "select_run_by_idempotency_key": SELECT_RUN_BY_IDEMPOTENCY_KEY,
    "select_workflow_run": SELECT_WORKFLOW_RUN,
    "count_workflow_runs": COUNT_WORKFLOW_RUNS,
    "count_step_attempts": COUNT_STEP_ATTEMPTS,
    "claim_workflow_runs": CLAIM_WORKFLOW_RUNS,
    "claim_unlimited_workflow_runs": CLAIM_UNLIMITED_WORKFLOW_RUNS,
    "claim_routed_workflow_runs": CLAIM_ROUTED_WORKFLOW_RUNS,
    "claim_unlimited_routed_workflow_runs": CLAIM_UNLIMITED_ROUTED_WORKFLOW_RUNS,
    "claim_unrouted_workflow_runs": CLAIM_UNROUTED_WORKFLOW_RUNS,
    "set_workflow_run_priority": SET_WORKFLOW_RUN_PRIORITY,
    "requeue_workflow_run": REQUEUE_WORKFLOW_RUN,
    "set_workflow_run_successor": SET_WORKFLOW_RUN_SUCCESSOR,
    "reserve_rate_limit_token": RESERVE_RATE_LIMIT_TOKEN,
    "upsert_paused_workflow": UPSERT_PAUSED_WORKFLOW,
    "delete_paused_workflow": DELETE_PAUSED_WORKFLOW,
    "select_paused_workflows": SELECT_PAUSED_WORKFLOWS,
    "upsert_worker_registration": UPSERT_WORKER_REGISTRATION,
    "delete_worker_registration": DELETE_WORKER_REGISTRATION,
    "insert_rate_limit_tokens": INSERT_RATE_LIMIT_TOKENS,
    "acquire_rate_limit_token": ACQUIRE_RATE_LIMIT_TOKEN,
    "extend_lease": EXTEND_LEASE,
    "sleep_workflow_run": SLEEP_WORKFLOW_RUN,
    "reconcile_parked_run": RECONCILE_PARKED_RUN,
    "complete_workflow_run": COMPLETE_WORKFLOW_RUN,
    "select_owned_run_for_failure": SELECT_OWNED_RUN_FOR_FAILURE,
    "fail_workflow_run": FAIL_WORKFLOW_RUN,
    "reschedule_after_failed_step": RESCHEDULE_AFTER_FAILED_STEP,
    "cancel_workflow_run": CANCEL_WORKFLOW_RUN,
    "retry_workflow_run": RETRY_WORKFLOW_RUN,
    "close_open_step_attempts": CLOSE_OPEN_STEP_ATTEMPTS,
    "delete_attempts_to_rerun": DELETE_ATTEMPTS_TO_RERUN,
    "select_waiting_parent_for_update": SELECT_WAITING_PARENT_FOR_UPDATE,
    "wake_parked_runs": WAKE_PARKED_RUNS,
    "insert_step_attempts": INSERT_STEP_ATTEMPTS,
    "select_step_attempt": SELECT_STEP_ATTEMPT,
    "delete_abandoned_step_attempts": DELETE_ABANDONED_STEP_ATTEMPTS,
    "set_step_child": SET_STEP_CHILD,
    "complete_step_attempt": COMPLETE_STEP_ATTEMPT,
    "fail_step_attempt": FAIL_STEP_ATTEMPT,
    "select_signal_runs_by_key": SELECT_SIGNAL_RUNS_BY_KEY,
    "deliver_signal": DELIVER_SIGNAL,
    "lock_runs": LOCK_RUNS,
    "lock_idempotency_scope": LOCK_IDEMPOTENCY_SCOPE,
    "select_signal_delivery": SELECT_SIGNAL_DELIVERY,
    "select_workflow_runs_by_id_prefix": SELECT_WORKFLOW_RUNS_BY_ID_PREFIX,
}
