"""The PostgreSQL claims: one statement each, templates like :mod:`~openworkflow.postgres.queries`.

Every claim fails runs past their deadline, picks due runs skipping rows
other workers hold, and leases each to its own worker id, in one statement.
What differs is how the runs are picked:

- :data:`CLAIM_WORKFLOW_RUNS`: any workflow (a worker without a registry);
- :data:`CLAIM_ROUTED_WORKFLOW_RUNS`: only the (name, version) pairs the
  worker registered (routing);
- :data:`CLAIM_UNROUTED_WORKFLOW_RUNS`: only runs no live worker registered.

Each admits limited runs into their concurrency keys (``admission_queries``)
but the ``UNLIMITED`` variants, which a worker none of whose workflows has a
``Concurrency`` limit sends: they are the statements from before limits
existed, and run in about a third of the time (``benchmarks/claim_plan.py``).

None of them takes a run of a paused workflow (``paused_workflows``); a pass
already running is unaffected.
"""

from __future__ import annotations

from openworkflow.postgres.admission_queries import ADMISSION, HAS_ROOM, fair_pending_branch
from openworkflow.postgres.flow_queries import pending_walk
from openworkflow.postgres.sql_fragments import DEADLINE_SWEEP

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
        SELECT 1 FROM unnest(%(route_names)b::text[], %(route_versions)b::text[])
          AS route("name", "version")
        WHERE route."name" = {run}."workflow_name"
          AND route."version" IS NOT DISTINCT FROM {run}."version")"""

# Each status is its own branch, walking an index in claim order, and the
# Append runs a later branch only when the earlier ones fell short, so a claim
# reads a handful of index entries, never the whole backlog. Pending runs go
# highest priority first (then due time), on the partial index
# workflow_runs_pending_priority_idx walked one priority level at a time
# (flow_queries.pending_walk, which says why). Running runs (expired leases, parked
# runs whose wait was answered) and due sleeping runs stay in due order on the
# original's (namespace_id, status, available_at, created_at) index: they
# already started, and finishing them frees what they hold.
_PENDING_ORDER = 'COALESCE(wr."priority", 0) DESC, wr."available_at", wr."created_at"'
_DUE_ORDER = 'wr."available_at", wr."created_at"'

# What each branch hands on: the run, whether its lease expired, and what the
# admission needs (its attempts on the locked row, its key and limit).
_POOL_COLUMNS = (
    '"lease_expired", "attempts", "workflow_name", "concurrency_key", "concurrency_limit"'
)
_LOCKED_COLUMNS = """wr."id", wr."worker_id" IS NOT NULL AS "lease_expired", wr."attempts",
           wr."workflow_name", wr."concurrency_key", wr."concurrency_limit" """

_CLAIM_BRANCH = """  SELECT "id", '{status}' AS "claimed_from", {columns} FROM (
    SELECT {locked}
    FROM {{schema}}."workflow_runs" wr
    WHERE wr."namespace_id" = %(ns)s AND wr."status" = '{status}' AND wr."available_at" <= NOW()
      AND (wr."deadline_at" IS NULL OR wr."deadline_at" > NOW()){filters}
    ORDER BY {order}
    LIMIT %(claim_limit)s
    FOR UPDATE SKIP LOCKED) AS "{alias}"
"""


def _room(run: str, limited: bool) -> str:
    return HAS_ROOM.format(run=run) if limited else ""


_NOT_EXPIRED = '\n          AND (wr."deadline_at" IS NULL OR wr."deadline_at" > NOW())'


def _claim_branch(
    status: str, filters: str, alias: str | None = None, limited: bool = False
) -> str:
    if status == "pending":
        walk = pending_walk(
            _LOCKED_COLUMNS,
            "%(claim_limit)s",
            run="wr",
            filters=_NOT_EXPIRED + filters + _room("wr", limited),
            lock=True,
        )
        return (
            f"""  SELECT "id", 'pending' AS "claimed_from", {_POOL_COLUMNS} FROM (\n"""
            f"""    {walk}) AS "{alias or status}"\n"""
        )
    return _CLAIM_BRANCH.format(
        status=status,
        filters=filters + _room("wr", limited),
        order=_DUE_ORDER,
        columns=_POOL_COLUMNS,
        locked=_LOCKED_COLUMNS,
        alias=alias or status,
    )


# Limited runs that already started (expired leases, woken parked runs) come
# before pending runs: they hold (or need) a slot of their key, and behind a
# permanent backlog of pending runs they would never be taken over, which
# would stall their key for good. Unlimited ones keep the original's order.
_LIMITED = '\n      AND wr."concurrency_key" IS NOT NULL'
_UNLIMITED = '\n      AND wr."concurrency_key" IS NULL'


def _started_branches(filters: str, *, keyed: bool) -> list[str]:
    extra, alias = (_LIMITED, "limited_") if keyed else (_UNLIMITED, "")
    return [
        _claim_branch(status, filters + extra, alias + status, limited=True)
        for status in ("running", "sleeping")
    ]


def _candidates(branches: list[str], limited: bool) -> str:
    if not limited:
        return _plain_candidates(branches)
    # A run two branches both found (the fair branch and a pending branch: a
    # row this statement locked is not skipped) is kept once, at its first place.
    joined = "  UNION ALL\n".join(branches).rstrip("\n")
    return (
        f"""
pool AS MATERIALIZED (
  SELECT "id", "claimed_from", {_POOL_COLUMNS},
         ROW_NUMBER() OVER (ORDER BY "found_at") AS "position"
  FROM (
    SELECT DISTINCT ON ("id") * FROM (
      SELECT *, ROW_NUMBER() OVER () AS "found_at" FROM (
{joined}
      LIMIT %(claim_limit)s) AS due) AS found
    ORDER BY "id", "found_at") AS distinct_found
)"""
        + ADMISSION
    )


def _plain_candidates(branches: list[str]) -> str:
    # The claim of a worker none of whose workflows has a concurrency limit:
    # no admission, the statement the original's order gives (it runs in about
    # a third of the time).
    joined = "  UNION ALL\n".join(branches).rstrip("\n")
    return f"""
candidate AS (
  SELECT "id", "claimed_from", "lease_expired", ROW_NUMBER() OVER () AS "position" FROM (
{joined}
  LIMIT %(claim_limit)s) AS due
)"""


def _fair_branch(filters: str, *, routed: bool = False) -> str:
    return fair_pending_branch(
        routed=routed,
        columns=_POOL_COLUMNS,
        locked=_LOCKED_COLUMNS,
        filters=filters + _room("wr", True),
    )


# The front of the queue: the first %(front_limit)s due pending runs in claim
# order, unlocked (the claims lock the few they pick).
_FRONT_WALK = pending_walk(
    'r."id", r."workflow_name", r."version", COALESCE(r."priority", 0) AS "priority",'
    ' r."available_at", r."created_at", r."concurrency_key", r."concurrency_limit",'
    ' r."namespace_id", r."status" AS "front_status"',
    "%(front_limit)s",
)

# Each front run looked up and locked as it comes (runs other workers hold are
# passed over, so racing claims do not come back short) until enough are
# found. The run is matched on the front's columns, not on constants: every
# lookup is then a primary key probe whatever the statistics say. Matched on
# ``%(ns)s`` and ``'pending'``, a planner whose statistics missed this
# namespace's pending runs (a new namespace, or a backlog grown since the last
# ANALYZE) took any index on the namespace for as good and filtered it.
_FRONT_LOOKUP = f"""
    CROSS JOIN LATERAL (
      SELECT {_LOCKED_COLUMNS}
      FROM {{schema}}."workflow_runs" wr
      WHERE wr."namespace_id" = front."namespace_id" AND wr."id" = front."id"
        -- Checked again on the locked row: another worker may have taken it.
        -- (IS NOT DISTINCT FROM: never an index condition, so no index on
        -- the namespace and status competes with the primary key.)
        AND wr."status" IS NOT DISTINCT FROM front."front_status"
        AND wr."available_at" <= NOW()
        AND (wr."deadline_at" IS NULL OR wr."deadline_at" > NOW()){_NOT_PAUSED}
      FOR UPDATE SKIP LOCKED) AS picked"""


# The enforcing any-workflow claim's pending runs: those with room among the
# first %(front_limit)s in claim order (a bounded walk, so a full key's backlog
# at the front costs the same as any other); the fair branch finds limited
# runs further back. (Unlimited runs behind more than %(front_limit)s runs of
# full keys wait for them to shrink: workers claim routed, whose per-workflow
# branch finds them.)
_ANY_FRONT = f"""  SELECT "id", 'pending' AS "claimed_from", {_POOL_COLUMNS} FROM (
    -- Front runs in claim order: no more rows are read than taken.
    SELECT picked.* FROM (
      {_FRONT_WALK}) AS front{_FRONT_LOOKUP}
    WHERE TRUE<<room:front>>
    LIMIT %(claim_limit)s) AS "pending_front"
"""


def _any_candidates(limited: bool) -> str:
    if not limited:
        return _candidates(
            [_claim_branch(status, _NOT_PAUSED) for status in ("pending", "running", "sleeping")],
            limited=False,
        )
    pending_front, front = _as_cte("pending_front", _with_room(_ANY_FRONT, True))
    return pending_front + _candidates(
        [
            *_started_branches(_NOT_PAUSED, keyed=True),
            front,
            _fair_branch(_NOT_PAUSED + _not_in("pending_front")),
            *_started_branches(_NOT_PAUSED, keyed=False),
        ],
        limited=True,
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
      {_FRONT_WALK}
),
-- Only the first few of the worker's runs are fetched and locked: if other
-- workers hold them, the per-workflow branch below makes up the difference.
front_claimed AS MATERIALIZED (
  SELECT picked.* FROM (
    -- front holds its rows in claim order (the order the walk found them):
    -- no ORDER BY, so the filters stop at the first matches. The cheap
    -- routing test first (OFFSET 0 keeps it apart), the room hint after.
    SELECT front.* FROM (
      SELECT * FROM front WHERE TRUE{_ROUTED.format(run="front")}
      OFFSET 0) AS front
    WHERE TRUE<<room:front>>
    LIMIT 2 * %(claim_limit)s) AS front{_FRONT_LOOKUP}
  LIMIT %(claim_limit)s
),"""

_ROUTED_BY_ROUTE = f"""  SELECT "id", 'pending' AS "claimed_from", {_POOL_COLUMNS} FROM (
    SELECT {_LOCKED_COLUMNS}
    FROM {{schema}}."workflow_runs" wr
    WHERE wr."namespace_id" = %(ns)s AND wr."status" = 'pending' AND wr."available_at" <= NOW()
      AND (wr."deadline_at" IS NULL OR wr."deadline_at" > NOW()){_NOT_PAUSED}
      AND wr."id" <> ALL (ARRAY(SELECT "id" FROM front_claimed))<<room:wr>>
      -- = ANY(ARRAY(...)): the lookup is driven by the few ids picked, never a
      -- walk of the pending index filtered by them.
      AND wr."id" = ANY (ARRAY(
        SELECT pick."id"
        FROM unnest(%(route_names)b::text[], %(route_versions)b::text[])
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
        LIMIT 2 * %(claim_limit)s))
    ORDER BY {_PENDING_ORDER}
    LIMIT %(claim_limit)s
    FOR UPDATE SKIP LOCKED) AS "pending_by_route"
"""

_ROUTED_STARTED_FILTERS = _NOT_PAUSED + _ROUTED.format(run="wr")
_FRONT_CLAIMED = (
    f"""  SELECT "id", 'pending' AS "claimed_from", {_POOL_COLUMNS} FROM front_claimed\n"""
)


def _with_room(template: str, limited: bool) -> str:
    for run in ("front", "wr"):
        template = template.replace(f"<<room:{run}>>", _room(run, limited))
    return template


def _as_cte(name: str, branch: str) -> tuple[str, str]:
    """A branch as a CTE (its definition, and the branch reading it).

    The fair branch comes after pending branches and may meet the same runs
    (a row this statement locked is not skipped): it leaves out the runs of
    the pending branches it can name.
    """
    return f"\n{name} AS MATERIALIZED (\n{branch}),", f'  SELECT * FROM "{name}"\n'


def _not_in(*names: str) -> str:
    return "".join(
        f'\n      AND wr."id" <> ALL (ARRAY(SELECT "id" FROM "{name}"))' for name in names
    )


def _routed_candidates(limited: bool) -> str:
    by_route = _with_room(_ROUTED_BY_ROUTE, limited)
    if not limited:
        branches = [
            _FRONT_CLAIMED,
            by_route,
            *(_claim_branch(status, _ROUTED_STARTED_FILTERS) for status in ("running", "sleeping")),
        ]
    else:
        route_claimed, by_route = _as_cte("route_claimed", by_route)
        fair_filters = _ROUTED_STARTED_FILTERS + _not_in("front_claimed", "route_claimed")
        branches = [
            *_started_branches(_ROUTED_STARTED_FILTERS, keyed=True),
            _FRONT_CLAIMED,
            by_route,
            _fair_branch(fair_filters, routed=True),
            *_started_branches(_ROUTED_STARTED_FILTERS, keyed=False),
        ]
        return _with_room(_ROUTED_FRONT, limited) + route_claimed + _candidates(branches, limited)
    return _with_room(_ROUTED_FRONT, limited) + _candidates(branches, limited)


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
pool AS MATERIALIZED (
  SELECT "id", "claimed_from", {_POOL_COLUMNS}, ROW_NUMBER() OVER () AS "position" FROM (
    SELECT wr."status" AS "claimed_from", {_LOCKED_COLUMNS}
    FROM {{schema}}."workflow_runs" wr
    -- = ANY(ARRAY(...)), not IN (SELECT ...): the planner turned IN into a hash
    -- join over a sequential scan of the runs on backlogs of 2,000-20,000.
    WHERE wr."namespace_id" = %(ns)s AND wr."id" = ANY(ARRAY(SELECT "id" FROM unknown))
      AND wr."status" IN ('pending', 'running', 'sleeping') AND wr."available_at" <= NOW()
      AND (wr."deadline_at" IS NULL OR wr."deadline_at" > NOW()){_NOT_PAUSED}{_room("wr", True)}
    ORDER BY wr."available_at", wr."created_at"
    LIMIT %(claim_limit)s
    FOR UPDATE SKIP LOCKED) AS due
)"""

_LEASE = """,
-- Materialized, with the namespace as a column: the lease below then looks up
-- each run by its primary key whatever the statistics say of the namespace
-- (joined to a constant namespace that they miss, the planner took it for one
-- run and compared every run of the namespace with every candidate).
assigned AS MATERIALIZED (
  SELECT %(ns)s::text AS "namespace_id", candidate."id", candidate."claimed_from",
         candidate."lease_expired", owner."worker_id", candidate."position"
  FROM candidate
  JOIN unnest(%(worker_ids)b::text[]) WITH ORDINALITY AS owner("worker_id", "position")
    USING ("position")
)
UPDATE {schema}."workflow_runs" AS wr
SET "status" = 'running', "attempts" = wr."attempts" + 1, "worker_id" = assigned."worker_id",
    "available_at" = NOW() + %(lease_ms)s * INTERVAL '1 millisecond',
    "started_at" = COALESCE(wr."started_at", NOW()), "updated_at" = NOW()
FROM assigned
WHERE wr."namespace_id" = assigned."namespace_id" AND wr."id" = assigned."id"
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
  assigned."position",
  -- The database's clock as the reply leaves, for the worker's estimate of it (db_clock).
  clock_timestamp()
"""
"""Leases each candidate to the worker id at its position; the row ends with
(lease expired, has step attempts or NULL, position, the database's clock),
read from the end."""


def _claim(candidates: str) -> str:
    # Plain concatenation: {schema} is filled once, when the statement is rendered.
    return DEADLINE_SWEEP + candidates + _LEASE


CLAIM_WORKFLOW_RUNS = _claim(_any_candidates(limited=True))
CLAIM_UNLIMITED_WORKFLOW_RUNS = _claim(_any_candidates(limited=False))
CLAIM_ROUTED_WORKFLOW_RUNS = _claim(_routed_candidates(limited=True))
CLAIM_UNLIMITED_ROUTED_WORKFLOW_RUNS = _claim(_routed_candidates(limited=False))
CLAIM_UNROUTED_WORKFLOW_RUNS = _claim(_UNROUTED_CANDIDATES + ADMISSION)
