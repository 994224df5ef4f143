"""What the PostgreSQL claim costs on a large backlog: EXPLAIN ANALYZE figures (issue 17).

    .venv/bin/python -m benchmarks.claim_plan [--postgres-url URL] [--runs 30]
        [--pending 100000] [--workflows 50] [--keys 1000] [--limit 2] [--plan]

Issue 17 asks that the claim stay one index-driven statement, shown with
``EXPLAIN ANALYZE`` on 100,000 pending runs spread over 50 workflows and 1,000
concurrency keys (a claim in 1 ms or less). This command builds that backlog
in a fresh schema (migrated by the real :class:`PostgresBackend`, dropped at
the end) and measures:

- the server side of each claim statement: the median (and min-max) of
  ``Execution Time`` and ``Planning Time`` over ``--runs`` runs of
  ``EXPLAIN (ANALYZE, TIMING OFF, BUFFERS)``, each in a transaction that is
  rolled back, so every run sees the same data (key rows included); with the
  shared buffers it touched (machine-independent), the runs it leased and
  whether any plan read ``workflow_runs`` sequentially. The statement and its
  parameters are the ones the backend's own claim methods send (captured on
  their way to the connection), for 1 and 10 slots: a claim for any workflow,
  claims routed to 10, 1 and all of the workflows and to a workflow without
  runs, and the sweep for unrouted runs, all enforcing concurrency limits (the
  default), plus the any-workflow and routed-to-10 claims of a worker with no
  limited workflow (``enforce_concurrency=False``: the cheaper statement);
- the same statements with a generic plan: prepared server-side as psycopg
  prepares them, on a connection with ``plan_cache_mode = force_generic_plan``,
  run through ``EXPLAIN ANALYZE EXECUTE``: whether planning once, without the
  parameters' values, would keep execution index-driven and as cheap;
- the client side: the wall time of a real ``backend.claim_workflow_runs``
  call (pool checkout, round trip, row mapping), median over ``--runs`` calls;
  the runs each call leases, and the key rows it writes, are put back exactly
  as they were seeded;
- with keys, a hot key last: ``--pending // 50`` more pending runs of one full
  key of ``wf-0``, first in claim order (priority 10), so the claims must pass
  a full front of the queue over (the routed claim then runs its fair walk
  over keys); whether the fair walk ran is read from the plan.

The backlog: ``--pending`` due pending runs spread evenly over
``--workflows`` workflows (run i is of ``wf-<i mod workflows>``; even-numbered
ones versioned ``v1``, the others unversioned), about 9 % of them with a
priority above 0 and 1 % with a deadline a day away; ``--pending // 50``
sleeping runs and as many running runs under a live lease, none of them due
and none keyed; workflow ``wf-3`` paused; one live worker registered for every
workflow but the last, whose runs are therefore the unrouted ones. With
``--keys K`` (0: none, every run unlimited) pending run i has the concurrency
key ``k<i mod K>`` of its workflow and the limit ``--limit``; when the number
of workflows divides K (50 and 1,000), each key belongs to one workflow (key
``k<j>`` to ``wf-<j mod 50>``, 20 keys a workflow). The keys numbered below
K/2 (half of every workflow's keys) are full: ``--limit`` runs of the key run
under a live lease (attempt 1) and are the holders in its
``concurrency_keys`` row; the other keys have a row with no holder.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from benchmarks.claim_plan_keys import (
    SESSION_OPTIONS,
    ServerCost,
    Spread,
    commit_wall_times,
    custom_header,
    describe_keys,
    explain,
    full_plan,
    generic_header,
    generic_reports,
    generic_row,
    hot_key_header,
    node_loops,
    restore_keys,
    seed_hot_key,
    seed_keys,
    yes,
)
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
  "priority", "concurrency_key", "concurrency_limit")
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
       ELSE 0 END,
  -- Pending runs only, and none with --keys 0 (NULLIF: no modulo by zero).
  CASE WHEN run."status" = 'pending' THEN 'k' || (i %% NULLIF(%(keys)s, 0)) END,
  CASE WHEN run."status" = 'pending' AND %(keys)s > 0 THEN %(limit)s END
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


@dataclass(frozen=True, slots=True)
class Backlog:
    """The seeded runs: how many pending, over how many workflows and concurrency keys."""

    pending: int
    workflows: int
    keys: int = 0
    """Concurrency keys of the pending runs (0: none, every run unlimited)."""
    limit: int = 2
    """The concurrency limit of every key."""

    @property
    def others(self) -> int:
        """Sleeping runs, and as many running ones (neither due); also the hot key's runs."""
        return max(1, self.pending // 50)

    def route(self, number: int) -> WorkflowKey:
        """The (name, version) of the seeded workflow ``number``."""
        return f"wf-{number}", "v1" if number % 2 == 0 else None

    def routes(self, numbers: Sequence[int]) -> list[WorkflowKey]:
        """The (name, version) pairs of the seeded workflows ``numbers``."""
        return [self.route(number) for number in numbers]


@dataclass(frozen=True, slots=True)
class Statement:
    """One claim statement with its parameters, as the backend binds them."""

    query: bytes
    params: dict[str, Any]


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

    async def _send_claim(self, query: bytes, params: dict[str, Any]) -> tuple[list[Row], datetime]:
        # Every claim (rows, and when it would have gone out).
        return await self._fetchall(query, params), datetime.now(UTC)

    async def statement(self, claim: Awaitable[object]) -> Statement:
        """The one statement ``claim`` (a call of one of the claim methods) sends."""
        self.recorded.clear()
        await claim
        if len(self.recorded) != 1:
            raise RuntimeError(f"expected one claim statement, got {len(self.recorded)}")
        return self.recorded[0]


Claim = Callable[[PostgresBackend, list[str]], Awaitable[object]]
"""A claim method call, given the backend and the worker ids (one per slot)."""


def routed(workflows: list[WorkflowKey] | None, enforce: bool = True) -> Claim:
    """The regular claim, for any workflow (None) or routed to ``workflows``;
    ``enforce`` False: the statement that ignores concurrency keys."""

    def call(backend: PostgresBackend, worker_ids: list[str]) -> Awaitable[object]:
        params = ClaimWorkflowRunsParams(
            worker_ids=worker_ids,
            lease_duration_ms=LEASE_MS,
            workflows=workflows,
            enforce_concurrency=enforce,
        )
        return backend.claim_workflow_runs(params)

    return call


def unrouted(backend: PostgresBackend, worker_ids: list[str]) -> Awaitable[object]:
    """The sweep for runs no live worker registered (default scan limit)."""
    params = ClaimUnroutedWorkflowRunsParams(worker_ids=worker_ids, lease_duration_ms=LEASE_MS)
    return backend.claim_unrouted_workflow_runs(params)


def claim_cases(backlog: Backlog) -> list[tuple[str, Claim]]:
    """The claims measured, each with its label: the first two are the hot key's,
    the first four the client side's."""
    count = backlog.workflows
    ten = backlog.routes(range(10))
    return [
        ("any workflow", routed(None)),
        (f"routed to 10 of {count} (wf-{PAUSED} paused)", routed(ten)),
        ("any workflow, keys ignored", routed(None, enforce=False)),
        (f"routed to 10 of {count}, keys ignored", routed(ten, enforce=False)),
        (f"routed to 1 of {count}", routed(backlog.routes([7]))),
        (f"routed to all {count}", routed(backlog.routes(range(count)))),
        ("routed to a workflow with no runs", routed([("no-such-workflow", None)])),
        (f"unrouted sweep (wf-{count - 1} unknown)", unrouted),
    ]


def worker_ids(slots: int) -> list[str]:
    """One worker id per free slot, as a worker passes them."""
    return [f"claim-plan-slot-{slot}" for slot in range(slots)]


def seed(connection: psycopg.Connection[Any], schema: str, backlog: Backlog) -> None:
    """Insert the backlog and its keys, pause one workflow, register a worker,
    then VACUUM ANALYZE."""
    ns = {"ns": NAMESPACE}
    known = backlog.routes(range(backlog.workflows - 1))
    run_params = {
        **ns,
        "pending": backlog.pending,
        "others": backlog.others,
        "workflows": backlog.workflows,
        "keys": backlog.keys,
        "limit": backlog.limit,
    }
    statements: list[tuple[str, dict[str, Any]]] = [
        (SEED_RUNS, run_params),
        (SEED_PAUSED, {**ns, "workflow_name": backlog.route(PAUSED)[0]}),
        (SEED_REGISTRATION, {**ns, "workflows": Jsonb([list(key) for key in known])}),
    ]
    for text, params in statements:
        connection.execute(render(text, schema), params)
    seed_keys(connection, schema, NAMESPACE, backlog.keys, backlog.limit)
    vacuum(connection, schema, analyze=True)


def render(text: str, schema: str) -> sql.Composed:
    """``text`` with ``{schema}`` filled in as a quoted identifier."""
    return sql.SQL(text).format(schema=sql.Identifier(schema))


def vacuum(connection: psycopg.Connection[Any], schema: str, *, analyze: bool = False) -> None:
    """VACUUM the runs and key tables, so dead rows of earlier measurements cost nothing."""
    command = ("VACUUM ANALYZE" if analyze else "VACUUM") + (
        ' {schema}."workflow_runs", {schema}."concurrency_keys"'
    )
    connection.execute(render(command, schema))


async def claim_wall_times(
    backend: PostgresBackend,
    restorer: psycopg.Connection[Any],
    claim: Claim,
    slots: int,
    runs: int,
) -> tuple[Spread, int]:
    """Client wall time (ms) of real claims, and the fewest runs one call leased.

    Each call's runs, and the key rows it wrote, are put back as seeded before
    the next call.
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
        restore_keys(restorer, backend.schema)
        if attempt > 0:  # the first call warms the pool and the caches
            elapsed.append(took_ms)
            leased.append(len(claimed))
    return Spread.of(elapsed), min(leased)


def describe(connection: psycopg.Connection[Any], schema: str, backlog: Backlog) -> list[str]:
    """The header: server version and what was seeded, counted from the tables."""
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
        f"# Claim cost: {pending:,} pending runs over {backlog.workflows} workflows"
        f" and {backlog.keys:,} concurrency keys",
        "",
        f"PostgreSQL {version_row[0] if version_row else '?'}, fresh schema {schema!r};"
        f" load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (times are"
        " noisy on a busy machine; buffers are not).",
        f"Backlog: {pending:,} due pending runs ({prioritised:,} with a priority above 0,"
        f" {with_deadline:,} with a deadline a day away),"
        f" {by_status.get('sleeping', (0, 0, 0))[0]:,} sleeping and"
        f" {by_status.get('running', (0, 0, 0))[0]:,} running under a live lease (none due);"
        f" wf-{PAUSED} paused; a live worker registered for wf-0..wf-{last - 1}.",
        describe_keys(connection, schema, backlog.workflows, backlog.keys, backlog.limit),
    ]


async def server_side(
    url: str, schema: str, backlog: Backlog, runs: int, show_plans: bool
) -> list[str]:
    """The EXPLAIN ANALYZE tables, custom then generic plans (and the plans with
    ``show_plans``), as markdown lines."""
    recorder = StatementRecorder(url, schema)
    lines, generic = custom_header(runs), generic_header(runs)
    plans: list[str] = []
    with (
        psycopg.connect(url, autocommit=True) as admin,
        # No server-side prepared statements: each run is planned for its
        # parameters (a custom plan), as the backend's first executions are.
        psycopg.connect(url, prepare_threshold=None, options=SESSION_OPTIONS) as connection,
    ):
        for slots in SLOT_COUNTS:
            for label, claim in claim_cases(backlog):
                statement = await recorder.statement(claim(recorder, worker_ids(slots)))
                vacuum(admin, schema)
                query, params = statement.query, statement.params
                cost = ServerCost.of(explain(connection, query, params, runs))
                lines.append(
                    f"| {slots} | {label} | {cost.execution} | {cost.planning}"
                    f" | {cost.blocks} | {cost.leased} | {yes(cost.seq_scanned)}"
                    f" | {cost.jit_functions} |"
                )
                cells = generic_row(url, query, params, runs, cost)
                generic.append(f"| {slots} | {label}{cells}")
                if show_plans:
                    plan = full_plan(connection, query, params)
                    plans += ["", f"### {slots} slot(s): {label}", "", "```", plan, "```"]
    await recorder.stop()
    return lines + generic + plans


async def client_side(url: str, schema: str, backlog: Backlog, runs: int) -> list[str]:
    """The wall-time table of real ``claim_workflow_runs`` calls, as markdown lines."""
    cases = claim_cases(backlog)[:4]  # any workflow, routed to 10 of N; enforced or not
    lines = [
        "",
        f"Client side: wall time of backend.claim_workflow_runs, median (min-max) of {runs}"
        " calls, ms (the leased runs and the key rows are put back after each call). Beyond"
        " the server time above, each call waits for its commit's WAL flush (last row).",
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
            floor = commit_wall_times(restorer, schema, NAMESPACE, runs)
            lines.append(f"| - | for reference: a one-row UPDATE's commit | {floor} | - |")
    finally:
        await backend.stop()
    return lines


async def hot_key_side(
    url: str, schema: str, backlog: Backlog, runs: int, show_plans: bool
) -> list[str]:
    """The hot key's table (and plans): a full key's runs first in claim order."""
    with psycopg.connect(url, autocommit=True) as admin:
        hot = seed_hot_key(admin, schema, NAMESPACE, backlog.route(0)[0], backlog.others)
        vacuum(admin, schema, analyze=True)
    recorder = StatementRecorder(url, schema)
    lines = hot_key_header(hot)
    plans: list[str] = []
    with psycopg.connect(url, prepare_threshold=None, options=SESSION_OPTIONS) as connection:
        for slots in SLOT_COUNTS:
            for label, claim in claim_cases(backlog)[:2]:
                statement = await recorder.statement(claim(recorder, worker_ids(slots)))
                query, params = statement.query, statement.params
                reports = explain(connection, query, params, runs)
                cost = ServerCost.of(reports)
                loops, found = node_loops(reports[-1]["Plan"], "fair_pending")
                generic = ServerCost.of(generic_reports(url, query, params, runs).reports)
                lines.append(
                    f"| {slots} | {label} | {cost.execution} | {cost.planning} | {cost.blocks}"
                    f" | {cost.leased} | {f'ran, found {found}' if loops else 'not run'}"
                    f" | {cost.jit_functions}"
                    f" | {generic.execution} | {generic.blocks} |"
                )
                if show_plans:
                    plan = full_plan(connection, query, params)
                    plans += ["", f"### Hot key, {slots} slot(s): {label}", "", "```", plan, "```"]
    await recorder.stop()
    return lines + plans


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
        # Last: its runs stay in the backlog.
        hot = await hot_key_side(url, schema, backlog, runs, show_plans) if backlog.keys else []
    finally:
        await migrator.stop()
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )
    return header + server + client + hot


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
    parser.add_argument(
        "--keys", type=int, default=1000, help="concurrency keys (0: none, all unlimited)"
    )
    parser.add_argument("--limit", type=int, default=2, help="each key's concurrency limit")
    parser.add_argument("--plan", action="store_true", help="print one full plan per case")
    args = parser.parse_args(argv)
    if args.workflows < 10:
        parser.error("--workflows must be at least 10 (a case claims 10 of them)")
    if args.runs < 1 or args.pending < 1 or args.limit < 1:
        parser.error("--runs, --pending and --limit must be positive")
    if args.keys < 0:
        parser.error("--keys must be 0 or more")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and print its markdown report."""
    args = parse_args(argv)
    backlog = Backlog(args.pending, args.workflows, args.keys, args.limit)
    lines = asyncio.run(measure(args.postgres_url, backlog, args.runs, args.plan))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
