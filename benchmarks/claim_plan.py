"""What the PostgreSQL claim costs on a large backlog: EXPLAIN ANALYZE figures (issue 17).

    .venv/bin/python -m benchmarks.claim_plan [--postgres-url URL] [--runs 30]
        [--pending 100000] [--workflows 50] [--plan]

Issue 17 asks that the claim stay one index-driven statement, shown with
``EXPLAIN ANALYZE`` on 100,000 pending runs. This command builds that backlog
in a fresh schema (migrated by the real :class:`PostgresBackend`, dropped at
the end) and measures:

- the server side of each claim statement: the median (and min-max) of
  ``Execution Time`` and ``Planning Time`` over ``--runs`` runs of
  ``EXPLAIN (ANALYZE, TIMING OFF, BUFFERS)``, each in a transaction that is
  rolled back, so every run sees the same data; with the shared buffers it
  touched (machine-independent) and whether any plan read ``workflow_runs``
  sequentially. The statement and its parameters are the
  ones the backend's own claim methods send (captured on their way to the
  connection), for 1 and 10 slots: a claim for any workflow, claims routed to
  10, 1 and all of the workflows and to a workflow without runs, and the sweep
  for unrouted runs;
- the client side: the wall time of a real ``backend.claim_workflow_runs``
  call (pool checkout, round trip, row mapping), median over ``--runs`` calls;
  the runs each call leases are put back exactly as they were seeded.

The backlog: ``--pending`` due pending runs spread evenly over
``--workflows`` workflows (even-numbered ones versioned ``v1``, the others
unversioned), about 9 % of them with a priority above 0 and 1 % with a
deadline a day away; ``--pending // 50`` sleeping runs and as many running
runs under a live lease, none of them due; workflow ``wf-3`` paused; one live
worker registered for every workflow but the last, whose runs are therefore
the unrouted ones. Concurrency keys do not exist in the engine yet, so none
are seeded and the figures say nothing about them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from openworkflow.core.backend import ClaimWorkflowRunsParams
from openworkflow.core.flow_control import ClaimUnroutedWorkflowRunsParams, WorkflowKey
from openworkflow.postgres import PostgresBackend
from openworkflow.postgres.base import Row

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
NAMESPACE = "claim-plan"
LEASE_MS = 30_000  # the worker's default lease
SLOT_COUNTS = (1, 10)
PAUSED = 3  # wf-3 is paused; it is among the 10 workflows of the "10 of N" claim

SEED_RUNS = """
INSERT INTO {schema}."workflow_runs" (
  "namespace_id", "id", "workflow_name", "version", "status", "config", "attempts",
  "worker_id", "available_at", "deadline_at", "started_at", "created_at", "updated_at",
  "priority")
SELECT %(ns)s, gen_random_uuid()::text, 'wf-' || (i %% %(workflows)s),
  CASE WHEN (i %% %(workflows)s) %% 2 = 0 THEN 'v1' END,
  run."status", jsonb_build_object(), CASE WHEN run."status" = 'pending' THEN 0 ELSE 1 END,
  CASE WHEN run."status" = 'running' THEN 'busy-worker' END,
  -- Pending runs fell due when created (RESTORE_PENDING relies on it); the
  -- others wake or lose their lease an hour from now.
  CASE WHEN run."status" = 'pending' THEN run."created_at" ELSE NOW() + INTERVAL '1 hour' END,
  CASE WHEN i %% 100 = 0 THEN NOW() + INTERVAL '1 day' END,
  CASE WHEN run."status" <> 'pending' THEN run."created_at" END,
  run."created_at", run."created_at",
  CASE WHEN run."status" <> 'pending' THEN 0 WHEN i %% 97 = 0 THEN 5 WHEN i %% 13 = 0 THEN 1
       ELSE 0 END
FROM generate_series(1, %(pending)s + 2 * %(others)s) AS i
CROSS JOIN LATERAL (
  SELECT CASE WHEN i <= %(pending)s THEN 'pending'
              WHEN i <= %(pending)s + %(others)s THEN 'sleeping'
              ELSE 'running' END AS "status",
         NOW() - random() * INTERVAL '1 hour' AS "created_at"
) AS run
"""

SEED_PAUSED = """
INSERT INTO {schema}."paused_workflows" ("namespace_id", "workflow_name", "paused_at")
VALUES (%(ns)s, %(workflow_name)s, NOW())
"""

SEED_REGISTRATION = """
INSERT INTO {schema}."worker_registrations"
  ("namespace_id", "worker_id", "workflows", "heartbeat_at", "expires_at")
VALUES (%(ns)s, 'registered-worker', %(workflows)s, NOW(), NOW() + INTERVAL '1 day')
"""

# Puts leased runs back as seeded: pending, due since they were created.
RESTORE_PENDING = """
UPDATE {schema}."workflow_runs"
SET "status" = 'pending', "worker_id" = NULL, "attempts" = "attempts" - 1,
    "started_at" = NULL, "available_at" = "created_at"
WHERE "namespace_id" = %(ns)s AND "id" = ANY(%(ids)s)
"""

# A write that changes nothing, for the cost of a commit alone.
PAUSE_TOUCH = """
UPDATE {schema}."paused_workflows" SET "paused_at" = "paused_at" WHERE "namespace_id" = %(ns)s
"""


@dataclass(frozen=True, slots=True)
class Backlog:
    """The seeded runs: how many pending, over how many workflows."""

    pending: int
    workflows: int

    @property
    def others(self) -> int:
        """Sleeping runs, and as many running ones (neither due)."""
        return max(1, self.pending // 50)

    def key(self, number: int) -> WorkflowKey:
        """The (name, version) of the seeded workflow ``number``."""
        return f"wf-{number}", "v1" if number % 2 == 0 else None

    def keys(self, numbers: Sequence[int]) -> list[WorkflowKey]:
        """The (name, version) pairs of the seeded workflows ``numbers``."""
        return [self.key(number) for number in numbers]


@dataclass(frozen=True, slots=True)
class Statement:
    """One claim statement with its parameters, as the backend binds them."""

    query: bytes
    params: dict[str, Any]


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


class StatementRecorder(PostgresBackend):
    """A backend that records the statements its claims would send, and sends none.

    Only the statement-building code of the real claim methods runs, so the
    benchmark binds exactly what the backend binds; it never connects.
    """

    def __init__(self, url: str, schema: str) -> None:
        super().__init__(url, NAMESPACE, schema, run_migrations=False, listen=False)
        self.recorded: list[Statement] = []

    async def _fetchall(self, query: bytes | sql.Composed, params: dict[str, Any]) -> list[Row]:
        assert isinstance(query, bytes), "the claims are pre-rendered statements"
        self.recorded.append(Statement(query, dict(params)))
        return []

    async def statement(self, claim: Awaitable[object]) -> Statement:
        """The one statement ``claim`` (a call of one of the claim methods) sends."""
        self.recorded.clear()
        await claim
        if len(self.recorded) != 1:
            raise RuntimeError(f"expected one claim statement, got {len(self.recorded)}")
        return self.recorded[0]


Claim = Callable[[PostgresBackend, list[str]], Awaitable[object]]
"""A claim method call, given the backend and the worker ids (one per slot)."""


def routed(workflows: list[WorkflowKey] | None) -> Claim:
    """The regular claim, for any workflow (None) or routed to ``workflows``."""

    def call(backend: PostgresBackend, worker_ids: list[str]) -> Awaitable[object]:
        params = ClaimWorkflowRunsParams(
            worker_ids=worker_ids, lease_duration_ms=LEASE_MS, workflows=workflows
        )
        return backend.claim_workflow_runs(params)

    return call


def unrouted(backend: PostgresBackend, worker_ids: list[str]) -> Awaitable[object]:
    """The sweep for runs no live worker registered (default scan limit)."""
    params = ClaimUnroutedWorkflowRunsParams(worker_ids=worker_ids, lease_duration_ms=LEASE_MS)
    return backend.claim_unrouted_workflow_runs(params)


def claim_cases(backlog: Backlog) -> list[tuple[str, Claim]]:
    """The claims measured, each with its label."""
    count = backlog.workflows
    return [
        ("any workflow", routed(None)),
        (f"routed to 10 of {count} (wf-{PAUSED} paused)", routed(backlog.keys(range(10)))),
        (f"routed to 1 of {count}", routed(backlog.keys([7]))),
        (f"routed to all {count}", routed(backlog.keys(range(count)))),
        ("routed to a workflow with no runs", routed([("no-such-workflow", None)])),
        (f"unrouted sweep (wf-{count - 1} unknown)", unrouted),
    ]


def worker_ids(slots: int) -> list[str]:
    """One worker id per free slot, as a worker passes them."""
    return [f"claim-plan-slot-{slot}" for slot in range(slots)]


def seed(connection: psycopg.Connection[Any], schema: str, backlog: Backlog) -> None:
    """Insert the backlog, pause one workflow, register a worker, then VACUUM ANALYZE."""
    ns = {"ns": NAMESPACE}
    known = backlog.keys(range(backlog.workflows - 1))
    statements: list[tuple[str, dict[str, Any]]] = [
        (
            SEED_RUNS,
            {
                **ns,
                "pending": backlog.pending,
                "others": backlog.others,
                "workflows": backlog.workflows,
            },
        ),
        (SEED_PAUSED, {**ns, "workflow_name": backlog.key(PAUSED)[0]}),
        (
            SEED_REGISTRATION,
            {**ns, "workflows": Jsonb([list(key) for key in known])},
        ),
    ]
    for text, params in statements:
        connection.execute(render(text, schema), params)
    vacuum(connection, schema, analyze=True)


def render(text: str, schema: str) -> sql.Composed:
    """``text`` with ``{schema}`` filled in as a quoted identifier."""
    return sql.SQL(text).format(schema=sql.Identifier(schema))


def vacuum(connection: psycopg.Connection[Any], schema: str, *, analyze: bool = False) -> None:
    """VACUUM the runs table, so dead rows of earlier measurements cost nothing."""
    command = (
        'VACUUM ANALYZE {schema}."workflow_runs"' if analyze else 'VACUUM {schema}."workflow_runs"'
    )
    connection.execute(render(command, schema))


@dataclass(frozen=True, slots=True)
class ServerCost:
    """What EXPLAIN ANALYZE reports for one claim over many runs."""

    execution: Spread
    planning: Spread
    blocks: int
    """Median shared buffers the execution touched (hit or read): a measure of
    the work done that, unlike time, does not depend on the machine's load."""
    seq_scanned: bool
    """Whether any run scanned ``workflow_runs`` sequentially (not index-driven)."""


def _seq_scans_runs(node: dict[str, Any]) -> bool:
    """Whether the plan ``node`` or any node under it is a Seq Scan of workflow_runs."""
    if node.get("Node Type") == "Seq Scan" and node.get("Relation Name") == "workflow_runs":
        return True
    return any(_seq_scans_runs(child) for child in node.get("Plans", []))


def explain(connection: psycopg.Connection[Any], statement: Statement, runs: int) -> ServerCost:
    """Run ``statement`` under EXPLAIN ANALYZE ``runs`` times, each rolled back."""
    query = b"EXPLAIN (ANALYZE, TIMING OFF, BUFFERS, FORMAT JSON) " + statement.query
    execution: list[float] = []
    planning: list[float] = []
    blocks: list[int] = []
    seq_scanned = False
    for attempt in range(runs + 1):
        row = connection.execute(query, statement.params).fetchone()
        connection.rollback()
        assert row is not None
        report = row[0][0]
        if attempt == 0:  # the first run warms the caches
            continue
        execution.append(float(report["Execution Time"]))
        planning.append(float(report["Planning Time"]))
        top = report["Plan"]  # buffer counts include every node below
        blocks.append(int(top["Shared Hit Blocks"]) + int(top["Shared Read Blocks"]))
        seq_scanned = seq_scanned or _seq_scans_runs(top)
    return ServerCost(
        Spread.of(execution), Spread.of(planning), round(statistics.median(blocks)), seq_scanned
    )


def full_plan(connection: psycopg.Connection[Any], statement: Statement) -> str:
    """The text plan of one rolled-back run, with per-node timing and buffers."""
    query = b"EXPLAIN (ANALYZE, BUFFERS) " + statement.query
    rows = connection.execute(query, statement.params).fetchall()
    connection.rollback()
    return "\n".join(str(row[0]) for row in rows)


def commit_wall_times(connection: psycopg.Connection[Any], schema: str, runs: int) -> Spread:
    """Client wall time (ms) of a one-row UPDATE in autocommit: the WAL flush every
    claim's commit waits for, plus a round trip."""
    touch = render(PAUSE_TOUCH, schema)
    elapsed: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        connection.execute(touch, {"ns": NAMESPACE})
        elapsed.append((time.perf_counter() - started) * 1000)
    return Spread.of(elapsed)


async def claim_wall_times(
    backend: PostgresBackend,
    restorer: psycopg.Connection[Any],
    claim: Claim,
    slots: int,
    runs: int,
) -> tuple[Spread, int]:
    """Client wall time (ms) of real claims, and the fewest runs one call leased.

    Each call's runs are put back as seeded before the next call.
    """
    elapsed: list[float] = []
    leased: list[int] = []
    restore = render(RESTORE_PENDING, backend.schema)
    for attempt in range(runs + 1):
        started = time.perf_counter()
        claimed = await claim(backend, worker_ids(slots))
        took_ms = (time.perf_counter() - started) * 1000
        assert isinstance(claimed, list)
        restorer.execute(restore, {"ns": NAMESPACE, "ids": [run.id for run in claimed]})
        if attempt > 0:  # the first call warms the pool and the caches
            elapsed.append(took_ms)
            leased.append(len(claimed))
    return Spread.of(elapsed), min(leased)


def describe(connection: psycopg.Connection[Any], schema: str, backlog: Backlog) -> list[str]:
    """The header: server version and what was seeded, counted from the table."""
    version_row = connection.execute("SHOW server_version").fetchone()
    counts = connection.execute(
        render(
            'SELECT "status", COUNT(*), COUNT(*) FILTER (WHERE "priority" > 0),'
            ' COUNT("deadline_at") FROM {schema}."workflow_runs" GROUP BY "status"',
            schema,
        )
    ).fetchall()
    by_status = {str(row[0]): (int(row[1]), int(row[2]), int(row[3])) for row in counts}
    pending, prioritised, with_deadline = by_status.get("pending", (0, 0, 0))
    last = backlog.workflows - 1
    return [
        f"# Claim cost: {pending:,} pending runs over {backlog.workflows} workflows",
        "",
        f"PostgreSQL {version_row[0] if version_row else '?'}, fresh schema {schema!r};"
        f" load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (times are"
        " noisy on a busy machine; buffers are not).",
        f"Backlog: {pending:,} due pending runs ({prioritised:,} with a priority above 0,"
        f" {with_deadline:,} with a deadline a day away),"
        f" {by_status.get('sleeping', (0, 0, 0))[0]:,} sleeping and"
        f" {by_status.get('running', (0, 0, 0))[0]:,} running under a live lease (none due);"
        f" wf-{PAUSED} paused; a live worker registered for wf-0..wf-{last - 1}.",
        "Concurrency keys: not in the engine yet; none seeded, so these figures do not cover them.",
    ]


async def server_side(
    url: str, schema: str, backlog: Backlog, runs: int, show_plans: bool
) -> list[str]:
    """The EXPLAIN ANALYZE table (and the plans with ``show_plans``), as markdown lines."""
    recorder = StatementRecorder(url, schema)
    lines = [
        "",
        f"Server side: EXPLAIN (ANALYZE, TIMING OFF, BUFFERS), median (min-max) of {runs}"
        " rolled-back runs, ms; buffers: median shared blocks the execution hit or read;"
        " seq scan: whether any run read workflow_runs sequentially.",
        "",
        "| slots | claim | execution | planning | buffers | seq scan of runs |",
        "|---:|---|---:|---:|---:|---|",
    ]
    plans: list[str] = []
    with (
        psycopg.connect(url, autocommit=True) as admin,
        # No server-side prepared statements: each run is planned for its
        # parameters (a custom plan), as the backend's first executions are.
        psycopg.connect(url, prepare_threshold=None) as connection,
    ):
        for slots in SLOT_COUNTS:
            for label, claim in claim_cases(backlog):
                statement = await recorder.statement(claim(recorder, worker_ids(slots)))
                vacuum(admin, schema)
                cost = explain(connection, statement, runs)
                lines.append(
                    f"| {slots} | {label} | {cost.execution} | {cost.planning} | {cost.blocks}"
                    f" | {'yes' if cost.seq_scanned else 'no'} |"
                )
                if show_plans:
                    plan = full_plan(connection, statement)
                    plans += ["", f"### {slots} slot(s): {label}", "", "```", plan, "```"]
    await recorder.stop()
    return lines + plans


async def client_side(url: str, schema: str, backlog: Backlog, runs: int) -> list[str]:
    """The wall-time table of real ``claim_workflow_runs`` calls, as markdown lines."""
    cases = claim_cases(backlog)[:2]  # any workflow, routed to 10 of N
    lines = [
        "",
        f"Client side: wall time of backend.claim_workflow_runs, median (min-max) of {runs}"
        " calls, ms (the leased runs are put back after each call). Beyond the server"
        " time above, each call waits for its commit's WAL flush (last row).",
        "",
        "| slots | claim | wall time | runs leased |",
        "|---:|---|---:|---:|",
    ]
    backend = PostgresBackend(url, NAMESPACE, schema, listen=False)
    try:
        await backend.open()
        with psycopg.connect(url, autocommit=True) as restorer:
            for slots in SLOT_COUNTS:
                for label, claim in cases:
                    wall, leased = await claim_wall_times(backend, restorer, claim, slots, runs)
                    lines.append(f"| {slots} | {label} | {wall} | {leased} |")
            floor = commit_wall_times(restorer, schema, runs)
            lines.append(f"| - | for reference: a one-row UPDATE's commit | {floor} | - |")
    finally:
        await backend.stop()
    return lines


async def measure(url: str, backlog: Backlog, runs: int, show_plans: bool) -> list[str]:
    """Migrate a fresh schema with the real backend, seed it, measure, drop it."""
    schema = f"claim_plan_{uuid.uuid4().hex[:8]}"
    migrator = PostgresBackend(url, NAMESPACE, schema, listen=False)
    try:
        await migrator.open()
        await migrator.stop()
        with psycopg.connect(url, autocommit=True) as admin:
            seed(admin, schema, backlog)
            header = describe(admin, schema, backlog)
        server = await server_side(url, schema, backlog, runs, show_plans)
        client = await client_side(url, schema, backlog, runs)
    finally:
        await migrator.stop()
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )
    return header + server + client


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.claim_plan",
        description="EXPLAIN ANALYZE of the PostgreSQL claims on a large backlog.",
    )
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--runs", type=int, default=30, help="measured runs per case")
    parser.add_argument("--pending", type=int, default=100_000, help="pending runs seeded")
    parser.add_argument("--workflows", type=int, default=50, help="workflows (at least 10)")
    parser.add_argument("--plan", action="store_true", help="print one full plan per case")
    args = parser.parse_args(argv)
    if args.workflows < 10:
        parser.error("--workflows must be at least 10 (a case claims 10 of them)")
    if args.runs < 1 or args.pending < 1:
        parser.error("--runs and --pending must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and print its markdown report."""
    args = parse_args(argv)
    backlog = Backlog(pending=args.pending, workflows=args.workflows)
    lines = asyncio.run(measure(args.postgres_url, backlog, args.runs, args.plan))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
