"""The PostgreSQL claims: one statement each, templates like :mod:`~openworkflow.postgres.queries`.

Every claim fails runs past their deadline, picks due runs skipping rows
other workers hold, and leases each to its own worker id, in one statement.
What differs is how the runs are picked:

- :data:`CLAIM_WORKFLOW_RUNS`: any workflow (a worker without a registry);
- :data:`CLAIM_ROUTED_WORKFLOW_RUNS`: only the (name, version) pairs the
  worker registered (routing);
- :data:`CLAIM_UNROUTED_WORKFLOW_RUNS`: only runs no live worker registered.

None of them takes a run of a paused workflow (``paused_workflows``); a pass
already running is unaffected.
"""

from __future__ import annotations

from openworkflow.postgres.sql_fragments import NOTIFY_WORK

# Runs of paused workflows are skipped. The paused names are read once per
# branch (an InitPlan over a tiny table), then compared per row in memory.
_NOT_PAUSED = """
      AND wr."workflow_name" <> ALL (ARRAY(
        SELECT p."workflow_name" FROM {schema}."paused_workflows" p
        WHERE p."namespace_id" = %(ns)s))"""

# Routing: the run's (name, version) is one the worker registered; a NULL
# version matches unversioned runs only (IS NOT DISTINCT FROM).
_ROUTED = """
      AND EXISTS (
        SELECT 1 FROM unnest(%(route_names)s::text[], %(route_versions)s::text[])
          AS route("name", "version")
        WHERE route."name" = {run}."workflow_name"
          AND route."version" IS NOT DISTINCT FROM {run}."version")"""

# Each status is its own branch, walking an index in claim order, and the
# Append runs a later branch only when the earlier ones fell short, so a claim
# reads a handful of index entries, never the whole backlog. Pending runs go
# highest priority first (then due time), on the partial index
# workflow_runs_pending_priority_idx. Running runs (expired leases, parked
# runs whose wait was answered) and due sleeping runs stay in due order on the
# original's (namespace_id, status, available_at, created_at) index: they
# already started, and finishing them frees what they hold.
_PENDING_ORDER = 'COALESCE(wr."priority", 0) DESC, wr."available_at", wr."created_at"'
_DUE_ORDER = 'wr."available_at", wr."created_at"'

_CLAIM_BRANCH = """  SELECT "id", '{status}' AS "claimed_from", "lease_expired" FROM (
    SELECT wr."id", wr."worker_id" IS NOT NULL AS "lease_expired"
    FROM {{schema}}."workflow_runs" wr
    WHERE wr."namespace_id" = %(ns)s AND wr."status" = '{status}' AND wr."available_at" <= NOW()
      AND (wr."deadline_at" IS NULL OR wr."deadline_at" > NOW()){filters}
    ORDER BY {order}
    LIMIT %(claim_limit)s
    FOR UPDATE SKIP LOCKED) AS "{status}"
"""


def _claim_branch(status: str, filters: str) -> str:
    order = _PENDING_ORDER if status == "pending" else _DUE_ORDER
    return _CLAIM_BRANCH.format(status=status, filters=filters, order=order)


def _candidates(branches: list[str]) -> str:
    joined = "  UNION ALL\n".join(branches).rstrip("\n")
    return f"""
candidate AS (
  SELECT "id", "claimed_from", "lease_expired", ROW_NUMBER() OVER () AS "position" FROM (
{joined}
  LIMIT %(claim_limit)s) AS due
)"""


_ANY_CANDIDATES = _candidates(
    [_claim_branch(status, _NOT_PAUSED) for status in ("pending", "running", "sleeping")]
)

# Routed pending runs, in two steps so that the cost never grows with the
# runs of other workflows:
# - front_claimed: among the first %(front_limit)s due pending runs in global
#   claim order (a bounded walk of workflow_runs_pending_priority_idx), the
#   worker's. When its workflows make up a fair share of the queue, this
#   finds every run wanted and is the globally right pick.
# - otherwise (only then: the Append stops early), the top runs of each
#   registered (name, version) on workflow_runs_pending_route_idx, merged in
#   claim order. Every one of them ranks after the runs the first step took
#   (those it passed over are held by other workers), so the two together
#   are the best runs the worker can take.
# Under contention either step may take fewer runs than wanted (rows other
# workers hold are skipped, not waited for); the worker claims again.
# Running and sleeping runs are few and drained as they fall due, so their
# branches filter the due-order walk as above.
_ROUTED_FRONT = f"""
front AS MATERIALIZED (
  SELECT wr."id", wr."workflow_name", wr."version", COALESCE(wr."priority", 0) AS "priority",
         wr."available_at", wr."created_at"
  FROM {{schema}}."workflow_runs" wr
  WHERE wr."namespace_id" = %(ns)s AND wr."status" = 'pending' AND wr."available_at" <= NOW()
  ORDER BY {_PENDING_ORDER}
  LIMIT %(front_limit)s
),
-- Only the first few of the worker's runs are fetched and locked: if other
-- workers hold them, the per-workflow branch below makes up the difference.
front_claimed AS MATERIALIZED (
  SELECT wr."id", wr."worker_id" IS NOT NULL AS "lease_expired"
  FROM {{schema}}."workflow_runs" wr
  WHERE wr."namespace_id" = %(ns)s
    AND wr."id" IN (
      SELECT front."id" FROM front WHERE TRUE{_ROUTED.format(run="front")}
      ORDER BY front."priority" DESC, front."available_at", front."created_at"
      LIMIT 2 * %(claim_limit)s)
    -- Checked again on the locked row: another worker may have taken it.
    AND wr."status" = 'pending' AND wr."available_at" <= NOW()
    AND (wr."deadline_at" IS NULL OR wr."deadline_at" > NOW()){_NOT_PAUSED}
  ORDER BY {_PENDING_ORDER}
  LIMIT %(claim_limit)s
  FOR UPDATE SKIP LOCKED
),"""

_ROUTED_BY_ROUTE = f"""  SELECT "id", 'pending' AS "claimed_from", "lease_expired" FROM (
    SELECT wr."id", wr."worker_id" IS NOT NULL AS "lease_expired"
    FROM {{schema}}."workflow_runs" wr
    WHERE wr."namespace_id" = %(ns)s AND wr."status" = 'pending' AND wr."available_at" <= NOW()
      AND (wr."deadline_at" IS NULL OR wr."deadline_at" > NOW()){_NOT_PAUSED}
      AND wr."id" <> ALL (ARRAY(SELECT "id" FROM front_claimed))
      AND wr."id" IN (
        SELECT pick."id"
        FROM unnest(%(route_names)s::text[], %(route_versions)s::text[])
          AS route("name", "version")
        CROSS JOIN LATERAL (
          SELECT r."id", COALESCE(r."priority", 0) AS "priority", r."available_at",
                 r."created_at"
          FROM {{schema}}."workflow_runs" r
          WHERE r."namespace_id" = %(ns)s AND r."status" = 'pending'
            AND r."workflow_name" = route."name"
            AND COALESCE(r."version", '') = COALESCE(route."version", '')
            AND r."version" IS NOT DISTINCT FROM route."version"
            AND r."available_at" <= NOW()
            AND (r."deadline_at" IS NULL OR r."deadline_at" > NOW())
          ORDER BY COALESCE(r."priority", 0) DESC, r."available_at", r."created_at"
          LIMIT %(claim_limit)s) AS pick
        WHERE route."name" <> ALL (ARRAY(
          SELECT p."workflow_name" FROM {{schema}}."paused_workflows" p
          WHERE p."namespace_id" = %(ns)s))
        ORDER BY pick."priority" DESC, pick."available_at", pick."created_at"
        LIMIT 2 * %(claim_limit)s)
    ORDER BY {_PENDING_ORDER}
    LIMIT %(claim_limit)s
    FOR UPDATE SKIP LOCKED) AS "pending_by_route"
"""

_ROUTED_CANDIDATES = _ROUTED_FRONT + _candidates(
    [
        """  SELECT "id", 'pending' AS "claimed_from", "lease_expired" FROM front_claimed\n""",
        _ROUTED_BY_ROUTE,
        *(
            _claim_branch(status, _NOT_PAUSED + _ROUTED.format(run="wr"))
            for status in ("running", "sleeping")
        ),
    ]
)


# Runs no live worker registered, among the scan_limit oldest due runs (each
# status walks the original's status index in due order, merged): a bounded
# look at the front of the queue, so the search costs the same whatever the
# backlog. The scan reads names from the index walk's own heap fetches; only
# the few runs nobody knows are then locked (and checked again, since another
# worker may have taken one meanwhile).
_UNROUTED_SCAN_BRANCH = """    (SELECT "id", "workflow_name", "version",
            "available_at", "created_at"
     FROM {{schema}}."workflow_runs"
     WHERE "namespace_id" = %(ns)s AND "status" = '{status}' AND "available_at" <= NOW()
     ORDER BY "available_at", "created_at"
     LIMIT %(scan_limit)s)"""

_UNROUTED_SCAN = "\n    UNION ALL\n".join(
    _UNROUTED_SCAN_BRANCH.format(status=status) for status in ("pending", "running", "sleeping")
)

_UNROUTED_CANDIDATES = f"""
live_route AS MATERIALIZED (
  SELECT DISTINCT entry ->> 0 AS "name", entry ->> 1 AS "version"
  FROM {{schema}}."worker_registrations" w, jsonb_array_elements(w."workflows") AS entry
  WHERE w."namespace_id" = %(ns)s AND w."expires_at" > NOW()
),
scanned AS MATERIALIZED (
  SELECT "id", "workflow_name", "version" FROM (
{_UNROUTED_SCAN}
  ) AS due
  ORDER BY "available_at", "created_at"
  LIMIT %(scan_limit)s
),
unknown AS MATERIALIZED (
  SELECT scanned."id" FROM scanned
  WHERE NOT EXISTS (
    SELECT 1 FROM live_route
    WHERE live_route."name" = scanned."workflow_name"
      AND live_route."version" IS NOT DISTINCT FROM scanned."version")
),
candidate AS (
  SELECT "id", "claimed_from", "lease_expired", ROW_NUMBER() OVER () AS "position" FROM (
    SELECT wr."id", wr."status" AS "claimed_from", wr."worker_id" IS NOT NULL AS "lease_expired"
    FROM {{schema}}."workflow_runs" wr
    -- = ANY(ARRAY(...)), not IN (SELECT ...): the planner turned IN into a hash
    -- join over a sequential scan of the runs on backlogs of 2,000-20,000.
    WHERE wr."namespace_id" = %(ns)s AND wr."id" = ANY(ARRAY(SELECT "id" FROM unknown))
      AND wr."status" IN ('pending', 'running', 'sleeping') AND wr."available_at" <= NOW()
      AND (wr."deadline_at" IS NULL OR wr."deadline_at" > NOW()){_NOT_PAUSED}
    ORDER BY wr."available_at", wr."created_at"
    LIMIT %(claim_limit)s
    FOR UPDATE SKIP LOCKED) AS due
)"""

_DEADLINE_SWEEP = """
-- Runs past their deadline are failed here, except those another transaction
-- holds right now (an owner recording a step): waiting for it would leave this
-- statement's snapshot blind to that step, which closed_attempts must see. The
-- next claim fails them.
WITH due_to_expire AS (
  SELECT "id" FROM {schema}."workflow_runs"
  WHERE "namespace_id" = %(ns)s AND "status" IN ('pending', 'running', 'sleeping')
    AND "deadline_at" IS NOT NULL AND "deadline_at" <= NOW()
  FOR NO KEY UPDATE SKIP LOCKED
),
expired AS (
  UPDATE {schema}."workflow_runs"
  SET "status" = 'failed', "error" = %(deadline_error)s, "worker_id" = NULL,
      "available_at" = NULL, "finished_at" = NOW(), "updated_at" = NOW()
  WHERE "namespace_id" = %(ns)s AND "id" IN (SELECT "id" FROM due_to_expire)
  RETURNING "namespace_id", "id", "parent_step_attempt_namespace_id", "parent_step_attempt_id"
),
-- A finished run keeps no attempt running (waits and sleeps included).
closed_attempts AS (
  UPDATE {schema}."step_attempts" sa
  SET "status" = 'failed', "error" = %(deadline_error)s, "finished_at" = NOW(),
      "updated_at" = NOW()
  FROM expired
  WHERE sa."namespace_id" = expired."namespace_id" AND sa."workflow_run_id" = expired."id"
    AND sa."status" = 'running'
),
-- Unlike the original, a child failed by its deadline wakes its parked parent too.
woken_parents AS (
  UPDATE {schema}."workflow_runs" parent
  SET "available_at" = CASE WHEN parent."available_at" IS NULL OR parent."available_at" > NOW()
                            THEN NOW() ELSE parent."available_at" END,
      "updated_at" = NOW()
  FROM expired, {schema}."step_attempts" sa
  WHERE expired."parent_step_attempt_id" IS NOT NULL
    AND sa."namespace_id" = expired."parent_step_attempt_namespace_id"
    AND sa."id" = expired."parent_step_attempt_id"
    AND sa."kind" = 'workflow' AND sa."status" = 'running'
    AND sa."child_workflow_run_namespace_id" = expired."namespace_id"
    AND sa."child_workflow_run_id" = expired."id"
    AND parent."namespace_id" = sa."namespace_id" AND parent."id" = sa."workflow_run_id"
    AND (parent."status" = 'sleeping'
         OR (parent."status" = 'running' AND parent."worker_id" IS NULL))
  RETURNING parent."id", {notify_work}
),"""

_LEASE = """,
assigned AS (
  SELECT candidate."id", candidate."claimed_from", candidate."lease_expired", owner."worker_id",
         candidate."position"
  FROM candidate
  JOIN unnest(%(worker_ids)s::text[]) WITH ORDINALITY AS owner("worker_id", "position")
    USING ("position")
)
UPDATE {schema}."workflow_runs" AS wr
SET "status" = 'running', "attempts" = wr."attempts" + 1, "worker_id" = assigned."worker_id",
    "available_at" = NOW() + %(lease_ms)s * INTERVAL '1 millisecond',
    "started_at" = COALESCE(wr."started_at", NOW()), "updated_at" = NOW()
FROM assigned
WHERE wr."namespace_id" = %(ns)s AND wr."id" = assigned."id"
RETURNING wr.*,
  -- Whether a worker still held the run (its lease expired: it crashed or hung).
  assigned."lease_expired",
  -- Whether the run has step history (so a fresh run skips reading it). Known
  -- only for runs claimed from pending: nobody can write steps for a pending
  -- run, so this statement's snapshot cannot miss one; NULL means "read it".
  CASE WHEN assigned."claimed_from" = 'pending' THEN EXISTS (
    SELECT 1 FROM {schema}."step_attempts" sa
    WHERE sa."namespace_id" = wr."namespace_id" AND sa."workflow_run_id" = wr."id"
  ) END,
  assigned."position"
"""
"""Leases each candidate to the worker id at its position; the row ends with
(lease expired, has step attempts or NULL, position), read from the end."""


def _claim(candidates: str) -> str:
    # Plain concatenation: {schema} is filled once, when the statement is rendered.
    return _DEADLINE_SWEEP.replace("{notify_work}", NOTIFY_WORK) + candidates + _LEASE


CLAIM_WORKFLOW_RUNS = _claim(_ANY_CANDIDATES)
CLAIM_ROUTED_WORKFLOW_RUNS = _claim(_ROUTED_CANDIDATES)
CLAIM_UNROUTED_WORKFLOW_RUNS = _claim(_UNROUTED_CANDIDATES)
