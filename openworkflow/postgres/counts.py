"""PostgreSQL: run and step-attempt counts that stay cheap on a big table.

``SELECT status, COUNT(*) ... GROUP BY status`` reads every row of the
namespace: about 100 ms for a million runs and several hundred for their four
million step attempts, on every dashboard page and every ``/metrics`` scrape.
Instead:

- Runs: each status is counted exactly through the
  ``(namespace_id, status, created_at)`` index, but only up to
  :data:`EXACT_COUNT_CAP` rows (an index-only scan that stops there). A status
  with more rows than that gets the planner's estimate for it (statistics
  from the last ``ANALYZE``, which autovacuum keeps current), never below the
  cap. Small counts, and so every count of a small table, are exact; big ones
  are close (within a few percent after an analyze) rather than exact.
- Step attempts (no status index, and adding one would cost every step's
  update): a table under :data:`EXACT_STEP_TABLE_ROWS` rows (by
  ``pg_class.reltuples``) is counted exactly; a bigger one counts its running
  attempts exactly, through the running runs and the run-id index (capped as
  above), and estimates completed and failed.

The TypeScript original's workers write the same tables and maintain no
counter, so nothing here depends on one.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from psycopg import sql

from openworkflow.postgres.schema import render

EXACT_COUNT_CAP = 10_000
"""Rows counted exactly per status before the planner's estimate is used instead."""

EXACT_STEP_TABLE_ROWS = 100_000
"""Below this many rows (``pg_class.reltuples``) step attempts are counted exactly."""

RUN_STATUSES = ("pending", "running", "sleeping", "completed", "succeeded", "failed", "canceled")
"""Every stored run status, the legacy ``sleeping`` and ``succeeded`` included."""

STEP_ESTIMATED_STATUSES = ("completed", "failed")
"""Step statuses estimated on a big table (running ones are counted; the legacy
``succeeded``, which no current engine writes, is left out there)."""

# One branch per status, the status written as a literal: the planner then
# uses that value's own statistics. With the statuses passed as an array
# (unnest + LATERAL) it assumed a seventh of the table per status, and on a
# million pending runs walked the created_at index through every row to find
# 10,000 of a rare status (1-2 s per count instead of about 10 ms). The ORDER
# BY is the (namespace_id, status, created_at) index's, so each branch is an
# index-only scan that stops at the cap.
_CAPPED_STATUS_COUNT = """(
  SELECT '{status}'::text AS "status", COUNT(*) AS "n" FROM (
    SELECT 1 FROM {{schema}}."workflow_runs" wr
    WHERE wr."namespace_id" = %(ns)s AND wr."status" = '{status}'
    ORDER BY wr."created_at" DESC
    LIMIT %(cap)s
  ) capped
)"""

CAPPED_RUN_COUNTS = "\nUNION ALL\n".join(
    _CAPPED_STATUS_COUNT.format(status=status) for status in RUN_STATUSES
)

STEP_TABLE_ROWS = """
SELECT COALESCE(
  (SELECT c."reltuples" FROM pg_catalog.pg_class c
   WHERE c."oid" = to_regclass(%(step_table)s)), -1)"""

EXACT_STEP_COUNTS = """
SELECT "status", COUNT(*) FROM {schema}."step_attempts"
WHERE "namespace_id" = %(ns)s GROUP BY "status" """

# A running attempt belongs to a running (executing or parked) run: a run that
# finishes closes its open attempts. So the running runs, found by the status
# index, lead to their attempts by the run-id index.
CAPPED_RUNNING_STEPS = """
SELECT COUNT(*) FROM (
  SELECT 1 FROM {schema}."workflow_runs" wr
  JOIN {schema}."step_attempts" sa
    ON sa."namespace_id" = wr."namespace_id" AND sa."workflow_run_id" = wr."id"
  WHERE wr."namespace_id" = %(ns)s AND wr."status" IN ('running', 'sleeping')
    AND sa."status" = 'running'
  LIMIT %(cap)s
) capped"""

_ESTIMATE = (
    'EXPLAIN (FORMAT JSON) SELECT 1 FROM {schema}.{table} WHERE "namespace_id" = {ns} '
    'AND "status" = {status}'
)


def estimate_query(schema: str, table: str, namespace: str, status: str) -> sql.Composed:
    """The planner's row estimate for one status of one namespace (literals: no plan cache)."""
    return sql.SQL(_ESTIMATE).format(
        schema=sql.Identifier(schema),
        table=sql.Identifier(table),
        ns=sql.Literal(namespace),
        status=sql.Literal(status),
    )


def planned_rows(explain: Any) -> int:
    """The top node's ``Plan Rows`` of an ``EXPLAIN (FORMAT JSON)`` answer."""
    document = explain[0] if isinstance(explain, list) else explain
    return int(document["Plan"]["Plan Rows"])


@lru_cache(maxsize=64)
def rendered(template: str, schema: str) -> bytes:
    """``template`` with ``{schema}`` filled in, once per schema."""
    return render(template, schema).encode()
