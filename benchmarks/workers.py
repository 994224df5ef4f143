"""More workers on PostgreSQL: 1, 2 and 4 worker processes on one backlog, and the cost per run.

    .venv/bin/python -m benchmarks.workers [--postgres-url URL] [--runs 5000]
        [--processes 1 2 4] [--concurrency 100] [--step-style sync|async]
        [--commit-connections 16] [--cores 16] [--reps 3] [--json]

Quick: ``--runs 300 --reps 1`` (about a minute).

For each process count: a fresh namespace gets ``--runs`` runs of the
throughput benchmark's workflow (4 no-op steps), then that many worker
processes (each like ``ow worker start``: one :class:`~openworkflow.Worker` at
``--concurrency`` on its own :class:`PostgresBackend`) are told to start at the
same moment, and the run counts are polled every 50 ms until all completed.
Printed per case: workflows/s, the workers' CPU per workflow, and the database
cost per workflow:

- statements: counted client-side in every worker process (each
  ``execute``/``executemany`` of a psycopg cursor; ``pg_stat_statements`` needs
  a server restart to load, so it is not used);
- commits: the ``xact_commit`` delta of ``pg_stat_database`` for the database,
  minus the statements of the observer's count queries (each an autocommit
  transaction);
  read after the statistics are flushed. Nothing else may use the database
  meanwhile, so point ``--postgres-url`` at a database of its own.

Each process count runs ``--reps`` times (odd repetitions in the reverse
order of process counts); the table shows medians, workflows/s with its range.
``--json`` adds one JSON line at the end (every repetition and the medians).

Then the database's capacity for small commits (``--commit-connections``
connections each updating its own row in autocommit, ``synchronous_commit``
as configured, for 3 s) and the arithmetic for a ``--cores``-core deployment:
how many workflows/s the commits allow, and how many the workers' CPU allows.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import resource
import signal
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.cases import STEP_STYLES, STEPS, bench_workflow, open_backend
from openworkflow import OpenWorkflow, Worker, event_loop

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SCHEMA = "openworkflow"
POLL_S = 0.05


class StatementCounter:
    """Counts the statements this process sends through psycopg cursors (sync and async)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self._originals: list[tuple[type, str, Any]] = []

    def install(self) -> StatementCounter:
        """Wrap ``execute``/``executemany`` of psycopg's cursor classes."""
        for cls in (psycopg.AsyncCursor, psycopg.Cursor):
            for name in ("execute", "executemany"):
                original = getattr(cls, name)
                self._originals.append((cls, name, original))
                setattr(cls, name, self._wrap(original, cls is psycopg.AsyncCursor))
        return self

    def uninstall(self) -> None:
        """Put the original methods back."""
        for cls, name, original in self._originals:
            setattr(cls, name, original)
        self._originals.clear()

    def _bump(self) -> None:
        with self._lock:
            self.count += 1

    def _wrap(self, original: Any, is_async: bool) -> Any:
        bump = self._bump
        if is_async:

            async def counted_async(cursor: Any, *args: Any, **kwargs: Any) -> Any:
                bump()
                return await original(cursor, *args, **kwargs)

            return counted_async

        def counted(cursor: Any, *args: Any, **kwargs: Any) -> Any:
            bump()
            return original(cursor, *args, **kwargs)

        return counted


def database_commits(url: str) -> tuple[int, int]:
    """(xact_commit, xact_rollback) of the URL's database, after the statistics are flushed."""
    time.sleep(1.2)  # backends flush their pending statistics at most once a second when idle
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SELECT pg_stat_clear_snapshot()")
        row = connection.execute(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


# -- one worker process ---------------------------------------------------------


async def serve(args: argparse.Namespace) -> dict[str, Any]:
    """A worker process: ``ready`` once connected, start on a line on stdin, stop on SIGTERM."""
    counter = StatementCounter().install()
    backend = open_backend("postgres", args.url, args.namespace, SCHEMA)
    await backend.open()  # type: ignore[attr-defined]
    workflow_ = bench_workflow(args.step_style)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    counter.count = 0  # the migrations check and pool warm-up are not the workload's
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    worker = Worker(backend, [workflow_], concurrency=args.concurrency)
    await worker.start()
    try:
        await stop.wait()
    finally:
        await worker.stop()
        statements = counter.count
        await backend.stop()
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return {"statements": statements, "cpu_s": cpu_s}


# -- the orchestrator -----------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Case:
    """One process count's figures."""

    processes: int
    runs: int
    seconds: float
    statements: int
    commits: int
    rollbacks: int
    cpu_s: float

    @property
    def rate(self) -> float:
        """Workflows completed per second."""
        return self.runs / self.seconds


@contextmanager
def _namespace(url: str) -> Iterator[str]:
    namespace = f"workers-{uuid.uuid4()}"
    try:
        yield namespace
    finally:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(
                sql.SQL('DELETE FROM {}."workflow_runs" WHERE "namespace_id" = %s').format(
                    sql.Identifier(SCHEMA)
                ),
                (namespace,),
            )


async def _spawn(args: argparse.Namespace, namespace: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.workers",
        "worker",
        f"--url={args.postgres_url}",
        f"--namespace={namespace}",
        f"--concurrency={args.concurrency}",
        f"--step-style={args.step_style}",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    if line.strip() != b"ready":
        raise RuntimeError("a worker process did not start")
    return process


async def _finish(process: asyncio.subprocess.Process) -> dict[str, Any]:
    process.send_signal(signal.SIGTERM)
    out, _ = await process.communicate()
    figures: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return figures


async def _wait_completed(client: OpenWorkflow, runs: int) -> None:
    """Poll until every run completed."""
    while True:
        counts = await client.counts()
        if counts.failed or counts.canceled:
            raise RuntimeError(f"runs ended badly: {counts}")
        if counts.completed >= runs:
            return
        await asyncio.sleep(POLL_S)


async def run_case(args: argparse.Namespace, processes: int) -> Case:
    """Enqueue the backlog, then let ``processes`` workers drain it."""
    with _namespace(args.postgres_url) as namespace:
        backend = open_backend("postgres", args.postgres_url, namespace, SCHEMA, 10)
        await backend.open()  # type: ignore[attr-defined]
        client = OpenWorkflow(backend)
        workflow_ = bench_workflow(args.step_style)
        try:
            for start in range(0, args.runs, 500):
                batch = range(start, min(args.runs, start + 500))
                await asyncio.gather(*(client.run(workflow_, index) for index in batch))
            workers = [await _spawn(args, namespace) for _ in range(processes)]
            commits_before, rollbacks_before = database_commits(args.postgres_url)
            observer = StatementCounter().install()  # its count queries are not the workers'
            started = time.perf_counter()
            for process in workers:
                assert process.stdin is not None
                process.stdin.write(b"go\n")
                await process.stdin.drain()
            await _wait_completed(client, args.runs)
            seconds = time.perf_counter() - started
            observer.uninstall()
            figures = [await _finish(process) for process in workers]
        finally:
            await backend.stop()
        commits_after, rollbacks_after = database_commits(args.postgres_url)
    return Case(
        processes=processes,
        runs=args.runs,
        seconds=seconds,
        statements=sum(int(f["statements"]) for f in figures),
        commits=commits_after - commits_before - observer.count,
        rollbacks=rollbacks_after - rollbacks_before,
        cpu_s=sum(float(f["cpu_s"]) for f in figures),
    )


def commit_capacity(url: str, connections: int, seconds: float = 3.0) -> float:
    """Small commits per second the database takes from ``connections`` clients at once."""
    table = sql.Identifier(f"ow_commit_probe_{uuid.uuid4().hex[:8]}")
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, n bigint)").format(table))
        admin.execute(
            sql.SQL("INSERT INTO {} SELECT i, 0 FROM generate_series(0, %s) AS i").format(table),
            (connections,),
        )
    counts = [0] * connections
    deadline = time.perf_counter() + seconds
    update = sql.SQL("UPDATE {} SET n = n + 1 WHERE id = %s").format(table)

    def client(index: int) -> None:
        with psycopg.connect(url, autocommit=True) as connection:
            while time.perf_counter() < deadline:
                connection.execute(update, (index,))
                counts[index] += 1

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP TABLE {}").format(table))
    return sum(counts) / seconds


def _median_range(values: list[float]) -> str:
    middle = statistics.median(values)
    if len(values) < 2:
        return f"{middle:,.0f}"
    return f"{middle:,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def summary(by_processes: dict[int, list[Case]]) -> dict[int, dict[str, float]]:
    """Medians per process count: workflows/s (and range), CPU, statements and commits per run."""
    medians: dict[int, dict[str, float]] = {}
    for processes, reps in by_processes.items():
        rates = [case.rate for case in reps]
        medians[processes] = {
            "workflows_per_s": statistics.median(rates),
            "workflows_per_s_min": min(rates),
            "workflows_per_s_max": max(rates),
            "cpu_ms_per_workflow": statistics.median(1000 * c.cpu_s / c.runs for c in reps),
            "statements_per_workflow": statistics.median(c.statements / c.runs for c in reps),
            "commits_per_workflow": statistics.median(c.commits / c.runs for c in reps),
            "rollbacks": sum(c.rollbacks for c in reps),
        }
    return medians


def report(
    by_processes: dict[int, list[Case]], capacity: float, args: argparse.Namespace
) -> list[str]:
    """The table and the arithmetic for ``args.cores`` cores, as Markdown lines."""
    medians = summary(by_processes)
    first = min(medians)
    base = medians[first]["workflows_per_s"]
    lines = [
        f"| worker processes | reps | workflows/s median (range) | vs {first}"
        " | worker CPU ms/workflow | statements/workflow | commits/workflow | rollbacks |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for processes, m in sorted(medians.items()):
        rates = [case.rate for case in by_processes[processes]]
        lines.append(
            f"| {processes} | {len(rates)} | {_median_range(rates)}"
            f" | {m['workflows_per_s'] / base:.2f}x | {m['cpu_ms_per_workflow']:.2f}"
            f" | {m['statements_per_workflow']:.2f} | {m['commits_per_workflow']:.2f}"
            f" | {m['rollbacks']:.0f} |"
        )
    commits_per_run = statistics.median(m["commits_per_workflow"] for m in medians.values())
    cpu_per_run = statistics.median(m["cpu_ms_per_workflow"] for m in medians.values()) / 1000
    by_commits = capacity / commits_per_run
    by_cpu = args.cores / cpu_per_run
    lines += [
        "",
        f"Commit capacity: {capacity:,.0f} small commits/s ({args.commit_connections}"
        f" connections, autocommit UPDATEs, on this machine, load average"
        f" {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs).",
        f"{args.cores} cores: the commits allow {capacity:,.0f} / {commits_per_run:.2f} commits"
        f" per workflow = {by_commits:,.0f} workflows/s; the workers' CPU allows"
        f" {args.cores} cores / {1000 * cpu_per_run:.2f} ms per workflow = {by_cpu:,.0f}"
        " workflows/s if the workers had every core (the database needs its share too).",
        f"So a {args.cores}-core deployment is limited by "
        + ("the database's commits" if by_commits < by_cpu else "the workers' CPU")
        + f", at about {min(by_commits, by_cpu):,.0f} workflows/s"
        f" ({min(by_commits, by_cpu) * STEPS:,.0f} steps/s); the commit capacity measured"
        " here is a 2-core machine's, so measure it on the target database.",
    ]
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The orchestrator's and the worker process's options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("role", nargs="?", choices=["orchestrate", "worker"], default="orchestrate")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--url", help="(worker process) the PostgreSQL URL")
    parser.add_argument("--namespace", help="(worker process) the namespace")
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--step-style", choices=STEP_STYLES, default="sync")
    parser.add_argument("--commit-connections", type=int, default=16)
    parser.add_argument("--cores", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each process count")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run every process count, then print the table and the arithmetic."""
    args = parse_args(argv)
    if args.role == "worker":
        print(json.dumps(event_loop.run(serve(args))), flush=True)
        return
    print(
        f"{args.runs} runs x {STEPS} {args.step_style} steps, workers at concurrency"
        f" {args.concurrency}; PostgreSQL {args.postgres_url.rsplit('/', 1)[-1]}",
        file=sys.stderr,
    )
    by_processes: dict[int, list[Case]] = {processes: [] for processes in args.processes}
    for rep in range(args.reps):
        # Odd repetitions go the other way, so a machine that slows down (or
        # warms up) during the run does not favour one process count.
        order = args.processes if rep % 2 == 0 else list(reversed(args.processes))
        for processes in order:
            print(f"rep {rep + 1}/{args.reps}: {processes} worker process(es) ...", file=sys.stderr)
            by_processes[processes].append(event_loop.run(run_case(args, processes)))
    capacity = commit_capacity(args.postgres_url, args.commit_connections)
    print("\n".join(report(by_processes, capacity, args)))
    if args.json:
        document = {
            "runs": args.runs,
            "step_style": args.step_style,
            "concurrency": args.concurrency,
            "commit_capacity_per_s": capacity,
            "summary": summary(by_processes),
            "reps": {p: [dataclasses.asdict(case) for case in c] for p, c in by_processes.items()},
        }
        print(json.dumps(document), flush=True)


if __name__ == "__main__":
    main()
