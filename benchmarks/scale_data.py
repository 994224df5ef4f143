"""Generating the scale benchmark's table: raw SQL, for generating data only.

This module is the only place of the scale benchmark with SQL of its own: the
rows are written in bulk (``INSERT ... SELECT generate_series`` on PostgreSQL,
a recursive CTE on SQLite, one transaction each) because a million runs through
the client would take hours. Everything measured afterwards goes through the
backends' own methods.

The rows look like a real namespace after 90 days of traffic:

- ``runs`` finished runs, created evenly over the past 90 days (newest first by
  index), 90 % completed, 7 % failed and 3 % canceled, of 8 workflows, each
  with 4 step attempts (the last one failed for a failed run);
- 10,000 pending runs created in the last hour, due now, no steps yet;
- 1,000 parked runs (``running``, no worker, due in a day) with one completed
  step and one running ``sleep`` step;
- two tags on every run: ``customer=c-N`` (N over 10,007 customers) and
  ``region`` in four values.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import psycopg
from psycopg import sql

WORKFLOWS = 8
CUSTOMERS = 10_007
REGIONS = ("eu-west", "eu-central", "us-east", "ap-south")
DAYS = 90


@dataclass(frozen=True, slots=True)
class Shape:
    """How many rows of each kind to generate."""

    runs: int
    pending: int = 10_000
    parked: int = 1_000


# Ids are UUIDv7-shaped like the engine's own (48 bits of milliseconds, then
# hashed bits): time-ordered, so the bulk insert appends to the id indexes.
_PG_ID = (
    "(SELECT substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-7' || substr(m, 1, 3) || '-8' "
    "|| substr(m, 4, 3) || '-' || substr(m, 7, 12) FROM (SELECT lpad(to_hex("
    "(extract(epoch FROM {at}) * 1000)::bigint), 12, '0') AS h, md5({seed}) AS m) parts)"
)

# Run i (1-based): finished runs first, then pending, then parked. Its status
# comes from a multiplicative hash of i so statuses are spread over time.
_PG_RUNS = """
INSERT INTO {schema}."workflow_runs" (
  "namespace_id", "id", "workflow_name", "version", "status", "idempotency_key", "config",
  "context", "input", "output", "error", "attempts", "worker_id", "available_at",
  "started_at", "finished_at", "created_at", "updated_at")
SELECT %(ns)s, RUN_ID_FINISHED, 'workflow-' || (i %% {workflows}), NULL,
  s.status, NULL, '{{}}'::jsonb, NULL,
  jsonb_build_object('order', i, 'customer', 'c-' || (i %% {customers})),
  CASE WHEN s.status = 'completed' THEN jsonb_build_object('total', i %% 1000) END,
  CASE WHEN s.status = 'failed' THEN
    jsonb_build_object('name', 'TimeoutError', 'message', 'upstream timed out') END,
  1, NULL, NULL, t.created + interval '1 second', t.created + interval '5 seconds',
  t.created, t.created + interval '5 seconds'
FROM generate_series(1::bigint, %(runs)s) AS i,
LATERAL (SELECT now() - (i * %(span_s)s / %(runs)s) * interval '1 second' AS created) t,
LATERAL (SELECT CASE WHEN (i * 7919) %% 100 < 90 THEN 'completed'
  WHEN (i * 7919) %% 100 < 97 THEN 'failed' ELSE 'canceled' END AS status) s
"""

_PG_ACTIVE = """
INSERT INTO {schema}."workflow_runs" (
  "namespace_id", "id", "workflow_name", "status", "config", "input", "attempts",
  "available_at", "started_at", "created_at", "updated_at")
SELECT %(ns)s, RUN_ID_ACTIVE, 'workflow-' || (i %% {workflows}),
  CASE WHEN i > %(runs)s + %(pending)s THEN 'running' ELSE 'pending' END, '{{}}'::jsonb,
  jsonb_build_object('order', i), CASE WHEN i > %(runs)s + %(pending)s THEN 1 ELSE 0 END,
  CASE WHEN i > %(runs)s + %(pending)s THEN now() + interval '1 day' ELSE now() END,
  CASE WHEN i > %(runs)s + %(pending)s THEN now() - interval '30 minutes' END,
  now() - ((i - %(runs)s) * interval '300 milliseconds'),
  now() - ((i - %(runs)s) * interval '300 milliseconds')
FROM generate_series(%(runs)s::bigint + 1, %(runs)s + %(pending)s + %(parked)s) AS i
"""

_PG_STEPS = """
INSERT INTO {schema}."step_attempts" (
  "namespace_id", "id", "workflow_run_id", "step_name", "kind", "status", "config",
  "output", "error", "started_at", "finished_at", "created_at", "updated_at")
SELECT r."namespace_id", STEP_ID_FINISHED, r."id", 'step-' || k,
  'function', st.status, '{{}}'::jsonb,
  CASE WHEN st.status = 'completed' THEN to_jsonb(k) END,
  CASE WHEN st.status = 'failed' THEN r."error" END,
  r."created_at" + k * interval '1 second', r."created_at" + (k + 1) * interval '1 second',
  r."created_at" + k * interval '1 second', r."created_at" + (k + 1) * interval '1 second'
FROM {schema}."workflow_runs" r, generate_series(0, 3) AS k,
LATERAL (SELECT CASE WHEN k = 3 AND r."status" = 'failed' THEN 'failed'
  ELSE 'completed' END AS status) st
WHERE r."namespace_id" = %(ns)s AND r."status" IN ('completed', 'failed', 'canceled')
"""

_PG_PARKED_STEPS = """
INSERT INTO {schema}."step_attempts" (
  "namespace_id", "id", "workflow_run_id", "step_name", "kind", "status", "config",
  "context", "output", "started_at", "finished_at", "created_at", "updated_at")
SELECT r."namespace_id", STEP_ID_PARKED, r."id",
  CASE WHEN k = 0 THEN 'step-0' ELSE 'wait-a-day' END,
  CASE WHEN k = 0 THEN 'function' ELSE 'sleep' END,
  CASE WHEN k = 0 THEN 'completed' ELSE 'running' END, '{{}}'::jsonb,
  CASE WHEN k = 1 THEN jsonb_build_object('kind', 'sleep', 'resumeAt', r."available_at") END,
  CASE WHEN k = 0 THEN to_jsonb(0) END,
  r."started_at", CASE WHEN k = 0 THEN r."started_at" END, r."started_at", r."started_at"
FROM {schema}."workflow_runs" r, generate_series(0, 1) AS k
WHERE r."namespace_id" = %(ns)s AND r."status" = 'running'
"""

_PG_TAGS = """
INSERT INTO {schema}."run_tags" ("namespace_id", "workflow_run_id", "key", "value", "created_at")
SELECT r."namespace_id", r."id", tag.key, tag.value, r."created_at"
FROM {schema}."workflow_runs" r,
LATERAL (SELECT (r."input"->>'order')::bigint AS i) o,
LATERAL (VALUES ('customer', 'c-' || (o.i %% {customers})),
  ('region', (%(regions)s::text[])[1 + (o.i * 31) %% 4])) AS tag(key, value)
WHERE r."namespace_id" = %(ns)s
"""


_PG_RUNS = _PG_RUNS.replace("RUN_ID_FINISHED", _PG_ID.format(at="t.created", seed="'run-' || i"))
_PG_ACTIVE = _PG_ACTIVE.replace(
    "RUN_ID_ACTIVE",
    _PG_ID.format(at="now() - ((i - %(runs)s) * interval '300 milliseconds')", seed="'run-' || i"),
)
_PG_STEPS = _PG_STEPS.replace(
    "STEP_ID_FINISHED",
    _PG_ID.format(at="r.\"created_at\" + k * interval '1 second'", seed="r.\"id\" || '-' || k"),
)
_PG_PARKED_STEPS = _PG_PARKED_STEPS.replace(
    "STEP_ID_PARKED", _PG_ID.format(at='r."started_at"', seed="r.\"id\" || '-' || k")
)


def generate_postgres(url: str, schema: str, namespace: str, shape: Shape) -> None:
    """Fill ``namespace`` of the (migrated) ``schema`` in one transaction, then analyze."""
    names = {
        "schema": sql.Identifier(schema),
        "workflows": sql.Literal(WORKFLOWS),
        "customers": sql.Literal(CUSTOMERS),
    }
    values = {
        "ns": namespace,
        "runs": shape.runs,
        "pending": shape.pending,
        "parked": shape.parked,
        "span_s": DAYS * 86_400,
        "regions": list(REGIONS),
    }
    with psycopg.connect(url, autocommit=False) as connection:
        connection.execute("SET LOCAL synchronous_commit = off")
        # The rows are consistent by construction: skip the foreign-key triggers
        # (millions of lookups) for this transaction; needs a superuser.
        connection.execute("SET LOCAL session_replication_role = replica")
        for template in (_PG_RUNS, _PG_ACTIVE, _PG_STEPS, _PG_PARKED_STEPS, _PG_TAGS):
            connection.execute(sql.SQL(template).format(**names), values)
        connection.commit()
    # What autovacuum would have done on a table this old: statistics for the
    # planner and a visibility map for index-only scans.
    with psycopg.connect(url, autocommit=True) as connection:
        for table in ("workflow_runs", "step_attempts", "run_tags"):
            connection.execute(
                sql.SQL("VACUUM (ANALYZE) {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
            )


_SQLITE_TIME = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ({offset}) || ' seconds')"
_SQLITE_ID = "printf('%08x-%04x-4%03x-8%03x-%012x', i, i % 65536, i % 4096, (i * 7) % 4096, i * 2654435761 % 281474976710656)"  # noqa: E501

_SQLITE_RUNS = f"""
INSERT INTO "workflow_runs" (
  "namespace_id", "id", "workflow_name", "status", "config", "input", "output", "error",
  "attempts", "available_at", "started_at", "finished_at", "created_at", "updated_at")
WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < :total),
rows AS (
  SELECT i, {_SQLITE_ID} AS id,
    CASE WHEN i > :runs + :pending THEN 'running' WHEN i > :runs THEN 'pending'
      WHEN (i * 7919) % 100 < 90 THEN 'completed' WHEN (i * 7919) % 100 < 97 THEN 'failed'
      ELSE 'canceled' END AS status,
    CASE WHEN i > :runs THEN -(i - :runs) * 0.3 ELSE -(i * :span_s / :runs) END AS age
  FROM seq)
SELECT :ns, id, 'workflow-' || (i % {WORKFLOWS}), status, '{{}}',
  json_object('order', i, 'customer', 'c-' || (i % {CUSTOMERS})),
  CASE WHEN status = 'completed' THEN json_object('total', i % 1000) END,
  CASE WHEN status = 'failed' THEN
    json_object('name', 'TimeoutError', 'message', 'upstream timed out') END,
  CASE WHEN status = 'pending' THEN 0 ELSE 1 END,
  CASE WHEN status = 'pending' THEN {_SQLITE_TIME.format(offset="0")}
    WHEN status = 'running' THEN {_SQLITE_TIME.format(offset="86400")} END,
  CASE WHEN status <> 'pending' THEN {_SQLITE_TIME.format(offset="age + 1")} END,
  CASE WHEN i <= :runs THEN {_SQLITE_TIME.format(offset="age + 5")} END,
  {_SQLITE_TIME.format(offset="age")}, {_SQLITE_TIME.format(offset="age")}
FROM rows
"""

_SQLITE_STEPS = """
INSERT INTO "step_attempts" (
  "namespace_id", "id", "workflow_run_id", "step_name", "kind", "status", "config",
  "output", "error", "started_at", "finished_at", "created_at", "updated_at")
SELECT r."namespace_id", r."id" || '-' || k.k, r."id",
  CASE WHEN r."status" = 'running' AND k.k = 1 THEN 'wait-a-day' ELSE 'step-' || k.k END,
  CASE WHEN r."status" = 'running' AND k.k = 1 THEN 'sleep' ELSE 'function' END,
  CASE WHEN r."status" = 'running' AND k.k = 1 THEN 'running'
    WHEN r."status" = 'failed' AND k.k = 3 THEN 'failed' ELSE 'completed' END,
  '{}', CASE WHEN r."status" <> 'failed' OR k.k < 3 THEN k.k END,
  CASE WHEN r."status" = 'failed' AND k.k = 3 THEN r."error" END,
  r."created_at", r."updated_at", r."created_at", r."updated_at"
FROM "workflow_runs" r JOIN (SELECT 0 AS k UNION ALL SELECT 1 UNION ALL SELECT 2
  UNION ALL SELECT 3) k
  ON r."status" IN ('completed', 'failed', 'canceled') OR (r."status" = 'running' AND k.k < 2)
WHERE r."namespace_id" = :ns
"""

_SQLITE_TAGS = f"""
INSERT INTO "run_tags" ("namespace_id", "workflow_run_id", "key", "value", "created_at")
SELECT r."namespace_id", r."id", 'customer', 'c-' || (json_extract(r."input", '$.order') % {CUSTOMERS}),
  r."created_at" FROM "workflow_runs" r WHERE r."namespace_id" = :ns
UNION ALL
SELECT r."namespace_id", r."id", 'region',
  CASE (json_extract(r."input", '$.order') * 31) % 4 WHEN 0 THEN '{REGIONS[0]}'
    WHEN 1 THEN '{REGIONS[1]}' WHEN 2 THEN '{REGIONS[2]}' ELSE '{REGIONS[3]}' END,
  r."created_at" FROM "workflow_runs" r WHERE r."namespace_id" = :ns
"""  # noqa: E501


def generate_sqlite(path: str, namespace: str, shape: Shape) -> None:
    """Fill ``namespace`` of the (migrated) SQLite file in one transaction, then analyze."""
    values = {
        "ns": namespace,
        "runs": shape.runs,
        "pending": shape.pending,
        "total": shape.runs + shape.pending + shape.parked,
        "span_s": DAYS * 86_400,
    }
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute("BEGIN IMMEDIATE")
        for statement in (_SQLITE_RUNS, _SQLITE_STEPS, _SQLITE_TAGS):
            connection.execute(statement, values)
        connection.execute("COMMIT")
        connection.execute("ANALYZE")
    finally:
        connection.close()
