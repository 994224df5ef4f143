"""Every SQL statement of the SQLite backend, as named constants.

Values are bound by name (``:name`` placeholders, a dict per statement);
fragments that check run ownership are shared so that every fenced write uses
the same condition.
"""

from __future__ import annotations

from openworkflow.sqlite.admission import HAS_ROOM

# A running run owned by the given worker: binds ns, run_id, worker_id.
RUN_OWNED = """
  "namespace_id" = :ns AND "id" = :run_id AND "status" = 'running' AND "worker_id" = :worker_id"""

# The claim fence, beside the worker id: the run's attempts as the writer's
# claim left it (NULL: the worker id alone, as TypeScript workers write). Every
# claim bumps attempts, so a write queued by a pass that lost its lease is
# refused even once the same worker id has claimed the run again.
CLAIM_HELD = '(:claim_attempt IS NULL OR "attempts" = :claim_attempt)'

# A pass handing its run back deletes one function attempt it abandoned
# (fenced: only while it still owns the run; only if still running).
DELETE_ABANDONED_STEP_ATTEMPT = f"""
DELETE FROM "step_attempts"
WHERE "namespace_id" = :ns AND "workflow_run_id" = :run_id AND "id" = :step_id
  AND "status" = 'running' AND "kind" = 'function'
  AND EXISTS (SELECT 1 FROM "workflow_runs" WHERE {RUN_OWNED} AND {CLAIM_HELD})"""

# A step attempt whose run is running and held by the claim: binds ns, run_id,
# step_id, worker_id and claim_attempt.
STEP_OWNED = f"""
  "namespace_id" = :ns AND "workflow_run_id" = :run_id AND "id" = :step_id
  AND EXISTS (
    SELECT 1 FROM "workflow_runs" wr
    WHERE wr."namespace_id" = :ns AND wr."id" = :run_id AND wr."status" = 'running'
      AND wr."worker_id" = :worker_id AND {CLAIM_HELD}
  )"""

MIGRATIONS_TABLE_EXISTS = """
SELECT COUNT(*) FROM sqlite_master
WHERE type = 'table' AND name = 'openworkflow_migrations'"""

CURRENT_MIGRATION_VERSION = 'SELECT MAX("version") FROM "openworkflow_migrations"'

PYTHON_MIGRATIONS_TABLE_EXISTS = """
SELECT COUNT(*) FROM sqlite_master
WHERE type = 'table' AND name = 'openworkflow_python_migrations'"""

INSERT_WORKFLOW_RUN = """
INSERT INTO "workflow_runs" (
  "namespace_id", "id", "workflow_name", "version", "status", "idempotency_key",
  "config", "context", "input", "attempts", "parent_step_attempt_namespace_id",
  "parent_step_attempt_id", "available_at", "deadline_at", "created_at", "updated_at",
  "priority", "scheduled_at", "concurrency_key", "concurrency_limit"
)
VALUES (
  :ns, :id, :workflow_name, :version, 'pending', :idempotency_key, :config, :context, :input,
  0, :parent_ns, :parent_id, :available_at, :deadline_at, :now, :now, :priority, :scheduled_at,
  :concurrency_key, :concurrency_limit
)
RETURNING *"""

SELECT_RUN_BY_IDEMPOTENCY_KEY = """
SELECT * FROM "workflow_runs"
WHERE "namespace_id" = :ns AND "workflow_name" = :workflow_name
  AND "idempotency_key" = :idempotency_key AND "created_at" >= :cutoff
ORDER BY "created_at" ASC, "id" ASC
LIMIT 1"""

SELECT_WORKFLOW_RUN = """
SELECT * FROM "workflow_runs" WHERE "namespace_id" = :ns AND "id" = :run_id LIMIT 1"""

COUNT_WORKFLOW_RUNS = """
SELECT "status", COUNT(*) FROM "workflow_runs" WHERE "namespace_id" = :ns GROUP BY "status" """

COUNT_STEP_ATTEMPTS = """
SELECT "status", COUNT(*) FROM "step_attempts" WHERE "namespace_id" = :ns GROUP BY "status" """

EXPIRE_DEADLINES = """
UPDATE "workflow_runs"
SET "status" = 'failed', "error" = :error, "worker_id" = NULL, "available_at" = NULL,
    "finished_at" = :now, "updated_at" = :now
WHERE "namespace_id" = :ns AND "status" IN ('pending', 'running', 'sleeping')
  AND "deadline_at" IS NOT NULL AND "deadline_at" <= :now
RETURNING "id", "namespace_id", "parent_step_attempt_namespace_id", "parent_step_attempt_id" """

# Runs of paused workflows are never claimed (the subquery runs once per
# statement, not per row).
_NOT_PAUSED = """
  AND "workflow_name" NOT IN (
    SELECT p."workflow_name" FROM "paused_workflows" p WHERE p."namespace_id" = :ns)"""

# Routing: :routes is a JSON list of [name, version] pairs. A pair is
# compared as its canonical JSON text (json_array), so a null version matches
# unversioned runs only, and the list is read once per statement (an IN list,
# not a subquery per row).
_ROUTED = """
  AND json_array("workflow_name", "version") IN (
    SELECT json_array(
      json_extract(route."value", '$[0]'), json_extract(route."value", '$[1]'))
    FROM json_each(:routes) AS route)"""

# Pending runs come first, highest priority first, then in due order, walking
# the partial index workflow_runs_pending_priority_idx instead of sorting the
# backlog. Running (expired leases, answered waits) and due sleeping runs stay
# in due order on the status/available_at index.
SELECT_CLAIMABLE_PENDING = f"""
SELECT "id" FROM "workflow_runs"
WHERE "namespace_id" = :ns AND "status" = 'pending' AND "available_at" <= :now
  AND ("deadline_at" IS NULL OR "deadline_at" > :now){_NOT_PAUSED}{HAS_ROOM}
ORDER BY COALESCE("priority", 0) DESC, "available_at", "created_at"
LIMIT :limit"""

# A routed claim looks at the front of the queue first (a bounded walk in
# claim order): when the worker's workflows make up a fair share of it, the
# runs wanted are there. Otherwise it takes the top runs of each registered
# (name, version) (workflow_runs_pending_route_idx) and merges them, so its
# cost never grows with the runs of other workflows.
SELECT_ROUTED_FRONT = f"""
SELECT "id" FROM (
  SELECT "id", "workflow_name", "version", "deadline_at",
         COALESCE("priority", 0) AS "priority", "available_at", "created_at",
         "concurrency_key", "concurrency_limit"
  FROM "workflow_runs"
  WHERE "namespace_id" = :ns AND "status" = 'pending' AND "available_at" <= :now
  ORDER BY COALESCE("priority", 0) DESC, "available_at", "created_at"
  LIMIT :front_limit
) AS "workflow_runs"
WHERE ("deadline_at" IS NULL OR "deadline_at" > :now){_NOT_PAUSED}{_ROUTED}{HAS_ROOM}
ORDER BY "priority" DESC, "available_at", "created_at"
LIMIT :limit"""

SELECT_PENDING_OF_ROUTE = f"""
SELECT "id", COALESCE("priority", 0), "available_at", "created_at" FROM "workflow_runs"
WHERE "namespace_id" = :ns AND "status" = 'pending' AND "workflow_name" = :workflow_name
  AND "version" IS :version AND "available_at" <= :now
  AND ("deadline_at" IS NULL OR "deadline_at" > :now){_NOT_PAUSED}{HAS_ROOM}
ORDER BY COALESCE("priority", 0) DESC, "available_at", "created_at"
LIMIT :limit"""

# The head run of one concurrency key, for the claim's fair walk over keys.
SELECT_PENDING_HEAD_OF_KEY = f"""
SELECT "id" FROM "workflow_runs"
WHERE "namespace_id" = :ns AND "status" = 'pending' AND "workflow_name" = :workflow_name
  AND "concurrency_key" = :concurrency_key AND "concurrency_key" IS NOT NULL
  AND "available_at" <= :now
  AND ("deadline_at" IS NULL OR "deadline_at" > :now){_NOT_PAUSED}
  AND (:routes IS NULL OR 1{_ROUTED}){HAS_ROOM}
ORDER BY COALESCE("priority", 0) DESC, "available_at", "created_at"
LIMIT 1"""

SELECT_CLAIMABLE_RUNNING = f"""
SELECT "id", "worker_id" IS NOT NULL FROM "workflow_runs"
WHERE "namespace_id" = :ns AND "status" IN ('running', 'sleeping') AND "available_at" <= :now
  AND ("deadline_at" IS NULL OR "deadline_at" > :now){_NOT_PAUSED}
  AND (:routes IS NULL OR 1{_ROUTED}){HAS_ROOM}
  -- Limited runs that already started go first (:keyed = 1): they hold or
  -- need their key's slot, and behind a permanent backlog a takeover would
  -- never come, stalling the key.
  AND (:keyed IS NULL OR ("concurrency_key" IS NOT NULL) = :keyed)
ORDER BY "available_at", "created_at"
LIMIT :limit"""

# Runs no live worker registered (see Backend.claim_unrouted_workflow_runs),
# among the :scan_limit oldest due runs (each status in due order, merged), so
# the search is bounded whatever the backlog.
_UNROUTED_SCAN = "\n  UNION ALL\n".join(
    f"""  SELECT * FROM (
    SELECT "id", "worker_id", "workflow_name", "version", "deadline_at", "available_at",
           "created_at", "concurrency_key", "concurrency_limit"
    FROM "workflow_runs"
    WHERE "namespace_id" = :ns AND "status" = '{status}' AND "available_at" <= :now
    ORDER BY "available_at", "created_at" LIMIT :scan_limit)"""
    for status in ("pending", "running", "sleeping")
)

SELECT_UNROUTED = f"""
SELECT "id", "worker_id" IS NOT NULL FROM (
  SELECT * FROM (
{_UNROUTED_SCAN}
  )
  ORDER BY "available_at", "created_at" LIMIT :scan_limit
) AS "workflow_runs"
WHERE ("deadline_at" IS NULL OR "deadline_at" > :now)
  AND json_array("workflow_name", "version") NOT IN (
    SELECT json_array(
      json_extract(route."value", '$[0]'), json_extract(route."value", '$[1]'))
    FROM "worker_registrations" w, json_each(w."workflows") AS route
    WHERE w."namespace_id" = :ns AND w."expires_at" > :now){_NOT_PAUSED}{HAS_ROOM}
ORDER BY "available_at", "created_at"
LIMIT :limit"""

CLAIM_WORKFLOW_RUN = """
UPDATE "workflow_runs"
SET "status" = 'running', "attempts" = "attempts" + 1, "worker_id" = :worker_id,
    "available_at" = :lease_until, "started_at" = COALESCE("started_at", :now),
    "updated_at" = :now
WHERE "namespace_id" = :ns AND "id" = :run_id
RETURNING *, EXISTS (
  SELECT 1 FROM "step_attempts" sa
  WHERE sa."namespace_id" = "workflow_runs"."namespace_id"
    AND sa."workflow_run_id" = "workflow_runs"."id"
)"""

EXTEND_LEASE = f"""
UPDATE "workflow_runs" SET "available_at" = :lease_until, "updated_at" = :now
WHERE {RUN_OWNED}
RETURNING *"""

# Parking: if a wait already has its answer (terminal child, delivered
# signal, a message to the run), the run becomes available now so the wake-up
# cannot be missed.
SLEEP_WORKFLOW_RUN = f"""
UPDATE "workflow_runs"
SET
  "status" = 'running',
  "available_at" = CASE
    WHEN (
      EXISTS (
        SELECT 1 FROM "step_attempts" sa
        JOIN "workflow_runs" child
          ON child."namespace_id" = sa."child_workflow_run_namespace_id"
          AND child."id" = sa."child_workflow_run_id"
        WHERE sa."namespace_id" = "workflow_runs"."namespace_id"
          AND sa."workflow_run_id" = "workflow_runs"."id"
          AND sa."kind" = 'workflow' AND sa."status" = 'running'
          AND child."status" IN ('completed', 'succeeded', 'failed', 'canceled')
      )
      OR EXISTS (
        SELECT 1 FROM "step_attempts" sa
        JOIN "workflow_signals" ws
          ON ws."namespace_id" = sa."namespace_id" AND ws."step_attempt_id" = sa."id"
        WHERE sa."namespace_id" = "workflow_runs"."namespace_id"
          AND sa."workflow_run_id" = "workflow_runs"."id"
          AND sa."kind" = 'signal-wait' AND sa."status" = 'running'
      )
      OR EXISTS (
        SELECT 1 FROM "step_attempts" sa
        JOIN "run_messages" m
          ON m."namespace_id" = sa."namespace_id" AND m."workflow_run_id" = sa."workflow_run_id"
          AND m."signal" = json_extract(sa."context", '$.signal')
          AND m."consumed_by_step_attempt_id" IS NULL
        WHERE sa."namespace_id" = "workflow_runs"."namespace_id"
          AND sa."workflow_run_id" = "workflow_runs"."id"
          AND sa."kind" = 'signal-wait' AND sa."status" = 'running'
      )
    ) AND :resume_at > :now THEN :now
    ELSE :resume_at
  END,
  "worker_id" = NULL,
  "updated_at" = :now
WHERE "namespace_id" = :ns AND "id" = :run_id
  AND "status" NOT IN ('succeeded', 'completed', 'failed', 'canceled')
  AND "worker_id" = :worker_id AND {CLAIM_HELD}
RETURNING *"""

COMPLETE_WORKFLOW_RUN = f"""
UPDATE "workflow_runs"
SET "status" = 'completed', "output" = :output, "error" = NULL, "available_at" = NULL,
    "finished_at" = :now, "updated_at" = :now
WHERE {RUN_OWNED}
RETURNING *"""

FAIL_WORKFLOW_RUN = f"""
UPDATE "workflow_runs"
SET "status" = :status, "available_at" = :available_at, "finished_at" = :finished_at,
    "error" = :error, "worker_id" = NULL, "started_at" = NULL, "updated_at" = :now
WHERE {RUN_OWNED}
RETURNING *"""

RESCHEDULE_AFTER_FAILED_STEP = f"""
UPDATE "workflow_runs"
SET "status" = 'pending', "available_at" = :available_at, "finished_at" = NULL,
    "error" = :error, "worker_id" = NULL, "started_at" = NULL, "updated_at" = :now
WHERE {RUN_OWNED}
RETURNING *"""

CANCEL_WORKFLOW_RUN = """
UPDATE "workflow_runs"
SET "status" = 'canceled', "worker_id" = NULL, "available_at" = NULL, "finished_at" = :now,
    "updated_at" = :now
WHERE "namespace_id" = :ns AND "id" = :run_id AND "status" IN ('pending', 'running', 'sleeping')
RETURNING *"""

# Every terminal transition runs this in its transaction, after finishing the
# runs, once for all of them: their open attempts (waits and sleeps included)
# are failed, finished at the moment their run finished.
CLOSE_OPEN_STEP_ATTEMPTS = """
UPDATE "step_attempts"
SET "status" = 'failed', "error" = :error,
    "finished_at" = (
      SELECT wr."finished_at" FROM "workflow_runs" wr
      WHERE wr."namespace_id" = "step_attempts"."namespace_id"
        AND wr."id" = "step_attempts"."workflow_run_id"),
    "updated_at" = :now
WHERE "namespace_id" = :ns AND "status" = 'running'
  AND "workflow_run_id" IN (SELECT "value" FROM json_each(:run_ids))"""

# Retry: drop what must run again: failed attempts (final failures and the
# waits a terminal transition closed) and running function attempts (rows an
# older engine or a TypeScript worker left); completed steps stay memoized.
DELETE_ATTEMPTS_TO_RERUN = """
DELETE FROM "step_attempts"
WHERE "namespace_id" = :ns AND "workflow_run_id" = :run_id
  AND ("status" = 'failed' OR ("status" = 'running' AND "kind" = 'function'))"""

RETRY_WORKFLOW_RUN = """
UPDATE "workflow_runs"
SET "status" = 'pending', "attempts" = 0, "available_at" = :now, "output" = NULL,
    "error" = NULL, "worker_id" = NULL, "started_at" = NULL, "finished_at" = NULL,
    "updated_at" = :now
WHERE "namespace_id" = :ns AND "id" = :run_id AND "status" IN ('failed', 'canceled')
RETURNING *"""

# Wake the parked parent of a child that reached a terminal status: only if
# the parent's step still waits on exactly this child and nobody owns it.
WAKE_PARENT = """
UPDATE "workflow_runs"
SET "available_at" = CASE WHEN "available_at" IS NULL OR "available_at" > :now THEN :now
                          ELSE "available_at" END,
    "updated_at" = :now
WHERE "namespace_id" = :parent_ns
  AND "id" = (
    SELECT "workflow_run_id" FROM "step_attempts"
    WHERE "namespace_id" = :parent_ns AND "id" = :parent_step_id AND "kind" = 'workflow'
      AND "status" = 'running'
      AND "child_workflow_run_namespace_id" = :child_ns AND "child_workflow_run_id" = :child_id
    LIMIT 1
  )
  AND ("status" = 'sleeping' OR ("status" = 'running' AND "worker_id" IS NULL))"""

INSERT_STEP_ATTEMPT = f"""
INSERT INTO "step_attempts" (
  "namespace_id", "id", "workflow_run_id", "step_name", "kind", "status", "config",
  "context", "started_at", "created_at", "updated_at"
)
SELECT :ns, :id, :run_id, :step_name, :kind, 'running', :config, :context, :now, :now, :now
FROM "workflow_runs"
WHERE {RUN_OWNED} AND {CLAIM_HELD}
RETURNING *"""

INSERT_COMPLETED_STEP_ATTEMPT = f"""
INSERT INTO "step_attempts" (
  "namespace_id", "id", "workflow_run_id", "step_name", "kind", "status", "config",
  "context", "output", "started_at", "finished_at", "created_at", "updated_at"
)
SELECT :ns, :id, :run_id, :step_name, :kind, 'completed', :config, :context, :output,
  :now, :now, :now, :now
FROM "workflow_runs"
WHERE {RUN_OWNED} AND {CLAIM_HELD}
RETURNING *"""

SELECT_STEP_ATTEMPT = """
SELECT * FROM "step_attempts" WHERE "namespace_id" = :ns AND "id" = :step_id LIMIT 1"""

SET_STEP_CHILD = f"""
UPDATE "step_attempts"
SET "child_workflow_run_namespace_id" = :child_ns, "child_workflow_run_id" = :child_id,
    "updated_at" = :now
WHERE "status" = 'running' AND {STEP_OWNED}
RETURNING *"""

# Completing twice keeps the first output (an ack lost after commit is retried).
COMPLETE_STEP_ATTEMPT = f"""
UPDATE "step_attempts"
SET "status" = 'completed',
    "output" = CASE WHEN "status" = 'running' THEN :output ELSE "output" END,
    "error" = NULL,
    "finished_at" = COALESCE("finished_at", :now),
    "updated_at" = CASE WHEN "status" = 'running' THEN :now ELSE "updated_at" END
WHERE "status" IN ('running', 'completed') AND {STEP_OWNED}
RETURNING *"""

FAIL_STEP_ATTEMPT = f"""
UPDATE "step_attempts"
SET "status" = 'failed',
    "output" = NULL,
    "error" = CASE WHEN "status" = 'running' THEN :error ELSE "error" END,
    "finished_at" = COALESCE("finished_at", :now),
    "updated_at" = CASE WHEN "status" = 'running' THEN :now ELSE "updated_at" END
WHERE "status" IN ('running', 'failed') AND {STEP_OWNED}
RETURNING *"""

SELECT_SIGNAL_RUNS_BY_KEY = """
SELECT DISTINCT "workflow_run_id" FROM "workflow_signals"
WHERE "namespace_id" = :ns AND "signal" = :signal AND "sender_idempotency_key" = :idempotency_key"""

# Only waits of runs that can still resume: rows an older engine or a TypeScript
# worker wrote may keep a finished run's wait 'running', and it must not receive
# (or report) a delivery.
SELECT_SIGNAL_WAITERS = """
SELECT sa."id", sa."workflow_run_id" FROM "step_attempts" sa
WHERE sa."namespace_id" = :ns AND sa."kind" = 'signal-wait' AND sa."status" = 'running'
  AND json_extract(sa."context", '$.signal') = :signal
  AND EXISTS (
    SELECT 1 FROM "workflow_runs" wr
    WHERE wr."namespace_id" = sa."namespace_id" AND wr."id" = sa."workflow_run_id"
      AND wr."status" IN ('pending', 'running', 'sleeping')
  )"""

INSERT_SIGNAL_DELIVERY = """
INSERT OR IGNORE INTO "workflow_signals" (
  "namespace_id", "id", "signal", "data", "sender_idempotency_key", "workflow_run_id",
  "step_attempt_id", "created_at"
)
VALUES (:ns, :id, :signal, :data, :idempotency_key, :run_id, :step_id, :now)"""

WAKE_SIGNALED_RUN = """
UPDATE "workflow_runs"
SET "available_at" = CASE WHEN "available_at" IS NULL OR "available_at" > :now THEN :now
                          ELSE "available_at" END,
    "updated_at" = :now
WHERE "namespace_id" = :ns AND "id" = :run_id AND "status" IN ('pending', 'running', 'sleeping')
  AND "worker_id" IS NULL"""

SELECT_SIGNAL_DELIVERY = """
SELECT "data" FROM "workflow_signals"
WHERE "namespace_id" = :ns AND "step_attempt_id" = :step_id
LIMIT 1"""


def list_page_query(table: str, where: str, order: str, cursor_op: str | None) -> str:
    """Build a cursor-paginated SELECT; ``table``, ``order`` and ``cursor_op`` are constants."""
    cursor = f' AND ("created_at", "id") {cursor_op} (:cursor_created_at, :cursor_id)'
    return (
        f'SELECT * FROM "{table}" WHERE {where}{cursor if cursor_op else ""} '
        f'ORDER BY "created_at" {order}, "id" {order} LIMIT :limit'
    )


# Runs whose id starts with a prefix: a range on the primary key (namespace, id),
# [prefix, prefix with its last character incremented), in SQLite's binary order.
SELECT_WORKFLOW_RUNS_BY_ID_RANGE = """
SELECT * FROM "workflow_runs"
WHERE "namespace_id" = :ns AND "id" >= :low AND "id" < :high
ORDER BY "id"
LIMIT :limit"""
