"""Concurrency keys and generic plans for :mod:`benchmarks.claim_plan` (issue 17).

Three pieces the claim benchmark adds on top of its plain backlog:

- :func:`seed_keys`: the holders of the full keys and one ``concurrency_keys``
  row per key, as a steady state would have them (a saved copy lets
  :func:`restore_keys` undo what a real, committed claim wrote);
- :func:`seed_hot_key`: a hot key, whose runs fill the front of the queue;
- :func:`generic_reports`: ``EXPLAIN ANALYZE`` of a claim statement run
  through a server-side prepared statement under
  ``plan_cache_mode = force_generic_plan``, to see what a generic plan
  (planned once, without the parameters' values) costs to execute;
- reading ``EXPLAIN`` reports (:class:`ServerCost`) and the report's table
  headers.

It imports nothing from :mod:`benchmarks.claim_plan`, which imports it.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

# Half the keys (numbers below keys / 2) are full: each gets `limit` runs
# running under a live lease, admitted at attempt 1, of its own workflow (and
# version), so the claim must pass the key's pending runs over.
SESSION_OPTIONS = "-c jit=off"
"""What the backend sets on its own connections (see postgres/connection.py): the
claims are measured as workers run them."""

SEED_HOLDERS = """
INSERT INTO {schema}."workflow_runs" (
  "namespace_id", "id", "workflow_name", "version", "status", "config", "attempts",
  "worker_id", "available_at", "started_at", "created_at", "updated_at", "priority",
  "concurrency_key", "concurrency_limit")
SELECT %(ns)s, gen_random_uuid()::text, k."workflow_name", k."version", 'running',
  jsonb_build_object(), 1, 'busy-worker', NOW() + INTERVAL '1 hour', NOW(), NOW(), NOW(), 0,
  k."concurrency_key", %(limit)s
FROM (
  SELECT DISTINCT "workflow_name", "version", "concurrency_key" FROM {schema}."workflow_runs"
  WHERE "namespace_id" = %(ns)s AND "status" = 'pending' AND "concurrency_key" IS NOT NULL
    AND substr("concurrency_key", 2)::integer < %(keys)s / 2
) AS k
CROSS JOIN generate_series(1, %(limit)s)
"""

# Every key has its row, as once its first runs were admitted: the full keys
# list their holders (in id order, as the claim writes them), the others none
# (their earlier runs finished, which frees a slot with no write).
SEED_KEY_ROWS = """
INSERT INTO {schema}."concurrency_keys"
  ("namespace_id", "workflow_name", "concurrency_key", "holder_ids", "holder_attempts")
SELECT %(ns)s, "workflow_name", "concurrency_key",
  COALESCE(array_agg("id" ORDER BY "id") FILTER (WHERE "status" = 'running'), ARRAY[]::text[]),
  COALESCE(array_agg("attempts" ORDER BY "id") FILTER (WHERE "status" = 'running'),
           ARRAY[]::integer[])
FROM {schema}."workflow_runs"
WHERE "namespace_id" = %(ns)s AND "concurrency_key" IS NOT NULL
GROUP BY "workflow_name", "concurrency_key"
"""

SAVE_KEY_ROWS = """
CREATE TABLE {schema}."concurrency_keys_seeded" AS SELECT * FROM {schema}."concurrency_keys"
"""

# What a committed claim wrote to the key rows, undone: holders put back as
# seeded, rows it created (a key seen for the first time) deleted.
RESTORE_KEY_ROWS = (
    """
UPDATE {schema}."concurrency_keys" ck
SET "holder_ids" = s."holder_ids", "holder_attempts" = s."holder_attempts",
    "updated_at" = s."updated_at"
FROM {schema}."concurrency_keys_seeded" s
WHERE ck."namespace_id" = s."namespace_id" AND ck."workflow_name" = s."workflow_name"
  AND ck."concurrency_key" = s."concurrency_key"
  AND (ck."holder_ids", ck."holder_attempts") IS DISTINCT FROM (s."holder_ids", s."holder_attempts")
""",
    """
DELETE FROM {schema}."concurrency_keys" ck
WHERE NOT EXISTS (
  SELECT 1 FROM {schema}."concurrency_keys_seeded" s
  WHERE s."namespace_id" = ck."namespace_id" AND s."workflow_name" = ck."workflow_name"
    AND s."concurrency_key" = ck."concurrency_key")
""",
)

# The hot key: the first full key of wf-0 (a workflow every routed case
# claims), in key order.
HOT_KEY = """
SELECT ck."concurrency_key", r."version", MAX(r."concurrency_limit")
FROM {schema}."concurrency_keys" ck
JOIN {schema}."workflow_runs" r
  ON r."namespace_id" = ck."namespace_id" AND r."workflow_name" = ck."workflow_name"
 AND r."concurrency_key" = ck."concurrency_key"
WHERE ck."namespace_id" = %(ns)s AND ck."workflow_name" = %(workflow_name)s
  AND cardinality(ck."holder_ids") > 0
GROUP BY ck."concurrency_key", r."version"
ORDER BY ck."concurrency_key"
LIMIT 1
"""

# Its runs go first in claim order: a priority above every seeded one (5).
SEED_HOT_RUNS = """
INSERT INTO {schema}."workflow_runs" (
  "namespace_id", "id", "workflow_name", "version", "status", "config", "attempts",
  "available_at", "created_at", "updated_at", "priority", "concurrency_key",
  "concurrency_limit")
SELECT %(ns)s, gen_random_uuid()::text, %(workflow_name)s, %(version)s, 'pending',
  jsonb_build_object(), 0, run."created_at", run."created_at", run."created_at", 10,
  %(key)s, %(limit)s
FROM generate_series(1, %(count)s) AS i
CROSS JOIN LATERAL (SELECT NOW() - random() * INTERVAL '1 hour' AS "created_at") AS run
"""


# A write that changes nothing, for the cost of a commit alone.
PAUSE_TOUCH = """
UPDATE {schema}."paused_workflows" SET "paused_at" = "paused_at" WHERE "namespace_id" = %(ns)s
"""


def _render(text: str, schema: str) -> sql.Composed:
    return sql.SQL(text).format(schema=sql.Identifier(schema))


def seed_keys(
    connection: psycopg.Connection[Any], schema: str, namespace: str, keys: int, limit: int
) -> None:
    """Fill half the keys of the seeded pending runs, write every key's row, save them.

    The pending runs must already carry their keys (``'k<number>'``, number
    below ``keys``) and ``limit``.
    """
    params = {"ns": namespace, "keys": keys, "limit": limit}
    for text in (SEED_HOLDERS, SEED_KEY_ROWS, SAVE_KEY_ROWS):
        connection.execute(_render(text, schema), params)


def restore_keys(connection: psycopg.Connection[Any], schema: str) -> None:
    """Put the key rows back as :func:`seed_keys` saved them."""
    for text in RESTORE_KEY_ROWS:
        connection.execute(_render(text, schema))


@dataclass(frozen=True, slots=True)
class HotKey:
    """The key whose runs were put at the front of the queue."""

    workflow_name: str
    key: str
    runs: int

    def __str__(self) -> str:
        return f"({self.workflow_name}, {self.key})"


def seed_hot_key(
    connection: psycopg.Connection[Any], schema: str, namespace: str, workflow_name: str, runs: int
) -> HotKey:
    """Add ``runs`` pending runs of a full key of ``workflow_name``, first in claim order."""
    row = connection.execute(
        _render(HOT_KEY, schema), {"ns": namespace, "workflow_name": workflow_name}
    ).fetchone()
    if row is None:
        raise RuntimeError(f"{workflow_name} has no full concurrency key")
    key, version, limit = str(row[0]), row[1], int(row[2])
    connection.execute(
        _render(SEED_HOT_RUNS, schema),
        {
            "ns": namespace,
            "workflow_name": workflow_name,
            "version": version,
            "key": key,
            "limit": limit,
            "count": runs,
        },
    )
    return HotKey(workflow_name, key, runs)


def node_loops(node: dict[str, Any], alias: str) -> tuple[int, int]:
    """(loops, rows) of the plan node over subquery ``alias`` under ``node`` ((0, 0) if none).

    Loops 0 means the node never ran (an Append stopped before it).
    """
    if node.get("Alias") == alias:
        return int(node.get("Actual Loops", 0)), int(node.get("Actual Rows", 0))
    for child in node.get("Plans", []):
        found = node_loops(child, alias)
        if found != (0, 0):
            return found
    return 0, 0


_PLACEHOLDER = re.compile(rb"%%|%\((\w+)\)[sbt]")


def positional(query: bytes) -> tuple[str, list[str]]:
    """``query`` with psycopg's ``%(name)s`` turned into ``$n`` (as psycopg sends it),
    and the parameter names in ``$n`` order."""
    order: list[str] = []

    def replace(match: re.Match[bytes]) -> bytes:
        if match.group(1) is None:
            return b"%"
        name = match.group(1).decode()
        if name not in order:
            order.append(name)
        return b"$%d" % (order.index(name) + 1)

    return _PLACEHOLDER.sub(replace, query).decode(), order


@dataclass(frozen=True, slots=True)
class GenericRun:
    """EXPLAIN ANALYZE reports of a statement run with a generic plan."""

    reports: list[dict[str, Any]]
    generic_plans: int
    """How many executions used a generic plan (pg_prepared_statements)."""
    custom_plans: int


GENERIC_NAME = "claim_plan_generic"


def _prepare(
    connection: psycopg.Connection[Any], query: bytes, params: dict[str, Any]
) -> list[str]:
    """Prepare ``query`` as :data:`GENERIC_NAME` with the parameter types psycopg
    gives it; return those types, in ``$n`` order."""
    # psycopg prepares it (one rolled-back run with prepare=True), so the
    # server sees the types psycopg's dumpers choose, exactly as when the
    # backend prepares it; read them before the rollback, on which psycopg
    # deallocates its statements.
    connection.execute(query, params, prepare=True)
    text, _ = positional(query)
    row = connection.execute(
        "SELECT parameter_types::text[] FROM pg_prepared_statements"
        " WHERE NOT from_sql AND statement = %s",
        [text],
        prepare=False,
    ).fetchone()
    connection.rollback()
    connection.execute("SELECT 1", prepare=False)  # sends psycopg's DEALLOCATE ALL now
    if row is None:
        raise RuntimeError("the prepared claim statement was not found in pg_prepared_statements")
    types: list[str] = list(row[0])
    # A statement prepared in SQL, which psycopg neither tracks nor deallocates.
    prepare = f"PREPARE {GENERIC_NAME} ({', '.join(types)}) AS {text}"
    connection.execute(prepare.encode(), prepare=False)
    connection.commit()
    return types


def generic_reports(url: str, query: bytes, params: dict[str, Any], runs: int) -> GenericRun:
    """EXPLAIN ANALYZE of ``query`` through a prepared statement with a forced generic plan.

    ``runs`` + 1 rolled-back runs (the first, which builds and caches the
    plan, is left out). The parameters are passed to ``EXECUTE`` as literals
    cast to the types the prepared statement has.
    """
    with psycopg.connect(url, options=SESSION_OPTIONS) as connection:
        # SET, not a connection option, which would override PGOPTIONS.
        connection.execute("SET plan_cache_mode = force_generic_plan", prepare=False)
        connection.commit()
        types = _prepare(connection, query, params)
        _, order = positional(query)
        arguments = sql.SQL(", ").join(
            sql.SQL("{}::{}").format(sql.Literal(params[key]), sql.SQL(kind))
            for key, kind in zip(order, types, strict=True)
        )
        explain = sql.SQL(
            "EXPLAIN (ANALYZE, TIMING OFF, BUFFERS, FORMAT JSON) EXECUTE {}({})"
        ).format(sql.Identifier(GENERIC_NAME), arguments)
        reports: list[dict[str, Any]] = []
        for attempt in range(runs + 1):
            row = connection.execute(explain, prepare=False).fetchone()
            connection.rollback()
            assert row is not None
            if attempt > 0:
                reports.append(row[0][0])
        counts = connection.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name = %s",
            [GENERIC_NAME],
            prepare=False,
        ).fetchone()
        assert counts is not None
    return GenericRun(reports, int(counts[0]), int(counts[1]))


@dataclass(frozen=True, slots=True)
class Spread:
    """Median and range of a series of milliseconds."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """The spread of ``values``."""
        return cls(statistics.median(values), min(values), max(values))

    def __str__(self) -> str:
        return f"{self.median:.3f} ({self.low:.3f}-{self.high:.3f})"


@dataclass(frozen=True, slots=True)
class ServerCost:
    """What EXPLAIN ANALYZE reports for one claim over many runs."""

    execution: Spread
    planning: Spread
    """Planning Time; with a cached generic plan, the time to look it up."""
    blocks: int
    """Median shared buffers the execution touched (hit or read): a measure of
    the work done that, unlike time, does not depend on the machine's load."""
    leased: int
    """Median runs one execution leased."""
    seq_scanned: bool
    """Whether any run scanned ``workflow_runs`` sequentially (not index-driven)."""
    jit_functions: int
    """Most functions one run JIT-compiled (0: no JIT). The server compiles
    when a plan's estimated cost passes ``jit_above_cost``, and that costs
    far more than this claim's execution."""

    @classmethod
    def of(cls, reports: Sequence[dict[str, Any]]) -> ServerCost:
        """The summary of JSON ``EXPLAIN ANALYZE`` reports (one per run)."""
        tops = [report["Plan"] for report in reports]  # buffer counts include every node below
        return cls(
            Spread.of([float(report["Execution Time"]) for report in reports]),
            Spread.of([float(report.get("Planning Time", 0.0)) for report in reports]),
            round(statistics.median(blocks(top) for top in tops)),
            round(statistics.median(int(top["Actual Rows"]) for top in tops)),
            any(_seq_scans_runs(top) for top in tops),
            max(int(report.get("JIT", {}).get("Functions", 0)) for report in reports),
        )


def blocks(node: dict[str, Any]) -> int:
    """Shared buffers the plan ``node`` and every node below it hit or read."""
    return int(node["Shared Hit Blocks"]) + int(node["Shared Read Blocks"])


def _seq_scans_runs(node: dict[str, Any]) -> bool:
    """Whether the plan ``node`` or any node under it is a Seq Scan of workflow_runs."""
    if node.get("Node Type") == "Seq Scan" and node.get("Relation Name") == "workflow_runs":
        return True
    return any(_seq_scans_runs(child) for child in node.get("Plans", []))


def explain(
    connection: psycopg.Connection[Any], statement: bytes, params: dict[str, Any], runs: int
) -> list[dict[str, Any]]:
    """Run ``statement`` under EXPLAIN ANALYZE ``runs`` times, each rolled back;
    the JSON reports (a first run, which warms the caches, left out)."""
    query = b"EXPLAIN (ANALYZE, TIMING OFF, BUFFERS, FORMAT JSON) " + statement
    reports: list[dict[str, Any]] = []
    for attempt in range(runs + 1):
        row = connection.execute(query, params).fetchone()
        connection.rollback()
        assert row is not None
        if attempt > 0:
            reports.append(row[0][0])
    return reports


def full_plan(connection: psycopg.Connection[Any], statement: bytes, params: dict[str, Any]) -> str:
    """The text plan of one rolled-back run, with per-node timing and buffers."""
    query = b"EXPLAIN (ANALYZE, BUFFERS) " + statement
    rows = connection.execute(query, params).fetchall()
    connection.rollback()
    return "\n".join(str(row[0]) for row in rows)


def describe_keys(
    connection: psycopg.Connection[Any], schema: str, workflows: int, keys: int, limit: int
) -> str:
    """The header's line on concurrency keys, counted from the key rows."""
    if keys == 0:
        return (
            "Concurrency keys: none (--keys 0): every run is unlimited, as before limits"
            " existed; the enforcing statements still run their admission, over no keyed run."
        )
    row = connection.execute(
        _render(
            'SELECT COUNT(*), COUNT(*) FILTER (WHERE cardinality("holder_ids") > 0),'
            ' COALESCE(SUM(cardinality("holder_ids")), 0) FROM {schema}."concurrency_keys"',
            schema,
        )
    ).fetchone()
    assert row is not None
    pairs, full, holders = int(row[0]), int(row[1]), int(row[2])
    return (
        f"Concurrency keys: pending run i has key k<i mod {keys}> of its workflow"
        f" wf-<i mod {workflows}>, limit {limit}: {pairs:,} (workflow, key)"
        f" pairs, each with its concurrency_keys row; {full:,} of them full (the keys"
        f" numbered below {keys // 2}: {holders:,} holders running under a live"
        " lease at attempt 1, among the running runs above), the others with no holder."
        " Each claim enforces the limits unless its label says keys ignored."
    )


def yes(flag: bool) -> str:
    """A flag as a table cell."""
    return "yes" if flag else "no"


def generic_row(
    url: str, statement: bytes, params: dict[str, Any], runs: int, custom: ServerCost
) -> str:
    """The generic-plan table's cells for ``statement`` after its slots and label."""
    run = generic_reports(url, statement, params, runs)
    cost = ServerCost.of(run.reports)
    total = custom.execution.median + custom.planning.median
    return (
        f" | {total:.3f} | {cost.execution} | {cost.planning} | {cost.blocks}"
        f" | {cost.leased} | {yes(cost.seq_scanned)} | {cost.jit_functions}"
        f" | {run.generic_plans}/{run.custom_plans} |"
    )


def custom_header(runs: int) -> list[str]:
    """The lines before the table of custom plans."""
    return [
        "",
        f"Server side: EXPLAIN (ANALYZE, TIMING OFF, BUFFERS), median (min-max) of {runs}"
        " rolled-back runs, ms, each planned for its parameters (a custom plan); buffers:"
        " median shared blocks the execution hit or read; leased: median runs leased;"
        " seq scan: whether any run read workflow_runs sequentially; JIT functions: most"
        " functions a run JIT-compiled (0: none; compiling is in the execution time).",
        "",
        "| slots | claim | execution | planning | buffers | leased | seq scan of runs"
        " | JIT functions |",
        "|---:|---|---:|---:|---:|---:|---|---:|",
    ]


def generic_header(runs: int) -> list[str]:
    """The lines before the table of generic plans."""
    return [
        "",
        "Generic plans: the same statements prepared server-side as psycopg prepares them,"
        " under plan_cache_mode = force_generic_plan, run with EXPLAIN (ANALYZE, TIMING OFF,"
        f" BUFFERS) EXECUTE, median (min-max) of {runs} rolled-back runs, ms; plan lookup:"
        " the Planning Time of EXECUTE (fetching the cached plan); custom total: execution +"
        " planning medians from the table above; plans used: generic/custom executions"
        " counted by pg_prepared_statements.",
        "",
        "| slots | claim | custom total | generic execution | plan lookup | buffers | leased"
        " | seq scan of runs | JIT functions | plans used |",
        "|---:|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]


def hot_key_header(hot: HotKey) -> list[str]:
    """The lines before the hot key's table."""
    return [
        "",
        f"Hot key: {hot.runs:,} more pending runs of the full key {hot}, priority 10, so"
        " first in claim order; enforced claims, custom plans as in the first table"
        " (generic: execution and buffers with a forced generic plan); fair walk: whether"
        " the fair branch over keys ran, and the runs it found.",
        "",
        "| slots | claim | execution | planning | buffers | leased | fair walk | JIT functions"
        " | generic execution | generic buffers |",
        "|---:|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]


def commit_wall_times(
    connection: psycopg.Connection[Any], schema: str, namespace: str, runs: int
) -> Spread:
    """Client wall time (ms) of a one-row UPDATE in autocommit: the WAL flush every
    claim's commit waits for, plus a round trip."""
    touch = _render(PAUSE_TOUCH, schema)
    elapsed: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        connection.execute(touch, {"ns": namespace})
        elapsed.append((time.perf_counter() - started) * 1000)
    return Spread.of(elapsed)
