"""What an idle worker costs: CPU and database queries per second, with no work at all.

    .venv/bin/python -m benchmarks.idle [--backend sqlite|postgres|both] [--seconds 30]
        [--warmup 5] [--reps 3] [--postgres-url URL] [--json]

Each repetition starts one worker (concurrency 10, one trivial workflow, no
schedules, no retention, no metrics) in a child process on a fresh target (a
SQLite file in a temporary folder; a fresh PostgreSQL schema, dropped after)
and gives it no work. After ``--warmup`` seconds it measures, over
``--seconds``:

* CPU: the child's ``utime + stime`` from ``/proc/PID/stat`` (all its threads),
  as a percentage of one core (the clock tick is 10 ms: over 30 s, ~0.03 %);
* queries: counted inside the child. SQLite, from each connection's
  ``set_trace_callback``: a transaction (BEGIN ... COMMIT) or a statement
  outside one is a query (``statements``: every statement but transaction
  control); ``PRAGMA data_version`` reads (the cross-process wake-up
  watcher; they touch no table) are reported apart. PostgreSQL: calls of
  psycopg's ``AsyncCursor.execute``/``executemany`` (``checks``: the pool's
  empty-query connection checks, reported apart), and,
  as a check from the server, the delta of ``xact_commit + xact_rollback`` in
  ``pg_stat_database`` for the target database (anything else using that
  database counts too; the server flushes those counters up to ~10 s late,
  so use ``--seconds`` of 30 or more).

The counting hooks cost the child a little CPU of their own (a Python call
per statement). Printed: each figure as median (min-max) over ``--reps``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from benchmarks.timers import DEFAULT_POSTGRES_URL, target
from openworkflow import Step, Worker, workflow

_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "END")


@workflow(name="idle-nothing")
async def nothing(step: Step, input: None) -> None:
    """Never started: the worker needs one workflow to register."""


class Counts:
    """Queries counted in the child, from any thread."""

    def __init__(self) -> None:
        self.values = {"queries": 0, "statements": 0, "data_version": 0, "checks": 0}
        self._lock = threading.Lock()

    def add(self, name: str) -> None:
        """Count one under ``name``."""
        with self._lock:
            self.values[name] += 1

    def sqlite_tracer(self) -> Callable[[str], None]:
        """A trace callback for one connection: a transaction, or a lone statement, is a query."""
        in_transaction = False

        def trace(text: str) -> None:
            nonlocal in_transaction
            head = text.lstrip().upper()
            if head.startswith("PRAGMA DATA_VERSION"):
                self.add("data_version")
            elif head.startswith("BEGIN"):
                in_transaction = True
                self.add("queries")
            elif head.startswith(("COMMIT", "ROLLBACK", "END")):
                in_transaction = False
            elif not head.startswith(("SAVEPOINT", "RELEASE")):
                self.add("statements")
                if not in_transaction:
                    self.add("queries")

        return trace


def install_counters(counts: Counts) -> None:
    """Count the statements of every SQLite connection and psycopg cursor made from now on."""
    connect = sqlite3.connect

    def counting_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection = connect(*args, **kwargs)
        connection.set_trace_callback(counts.sqlite_tracer())
        return connection

    sqlite3.connect = counting_connect  # type: ignore[assignment]
    cursor = psycopg.AsyncCursor
    for name in ("execute", "executemany"):
        original: Callable[..., Any] = getattr(cursor, name)
        setattr(cursor, name, _counted(original, counts))


def _counted(original: Callable[..., Any], counts: Counts) -> Callable[..., Any]:
    async def counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        # The connection pool checks a connection with an empty query: not a query.
        counts.add("checks" if query in ("", b"") else "queries")
        return await original(self, query, *args, **kwargs)

    return counted


async def child(kind: str, url: str, schema: str) -> None:
    """The child: run an idle worker; answer each line on stdin with the counts so far."""
    from benchmarks.cases import open_backend

    counts = Counts()
    install_counters(counts)
    backend = open_backend(kind, url, f"idle-{uuid.uuid4()}", schema)
    opener = getattr(backend, "open", None)
    if opener is not None:
        await opener()
    loop = asyncio.get_running_loop()
    try:
        async with Worker(backend, [nothing], concurrency=10):
            print(json.dumps({"ready": True}), flush=True)
            while await loop.run_in_executor(None, sys.stdin.readline):
                print(json.dumps(dict(counts.values)), flush=True)
    finally:
        await backend.stop()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_transactions(url: str) -> int | None:
    """PostgreSQL's count of committed and rolled-back transactions in ``url``'s database."""
    with contextlib.suppress(psycopg.Error), psycopg.connect(url, autocommit=True) as admin:
        row = admin.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database "
            "WHERE datname = current_database()"
        ).fetchone()
        # The admin connection's own transactions (this one) are not flushed before it ends.
        return None if row is None else int(row[0])
    return None


def measure_once(kind: str, args: argparse.Namespace) -> dict[str, float]:
    """One repetition: start the child, warm up, measure over ``--seconds``."""
    with target(kind, args.postgres_url, "idle") as (url, schema):
        command = [sys.executable, "-m", "benchmarks.idle", "--child", kind, url, schema]
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert process.stdin is not None and process.stdout is not None
        try:
            if "ready" not in json.loads(process.stdout.readline() or "{}"):
                raise RuntimeError("the idle worker did not start")
            time.sleep(args.warmup)

            def snapshot() -> tuple[float, float, dict[str, int], int | None]:
                assert process.stdin is not None and process.stdout is not None
                process.stdin.write("count\n")
                process.stdin.flush()
                counts = json.loads(process.stdout.readline())
                xacts = server_transactions(url) if kind == "postgres" else None
                return time.monotonic(), cpu_seconds(process.pid), counts, xacts

            start = snapshot()
            time.sleep(args.seconds)
            end = snapshot()
        finally:
            process.stdin.close()
            process.wait(30)
    return _rates(start, end)


def _rates(start: tuple[Any, ...], end: tuple[Any, ...]) -> dict[str, float]:
    elapsed = end[0] - start[0]
    found = {
        "cpu_percent": (end[1] - start[1]) / elapsed * 100,
        "queries_per_s": (end[2]["queries"] - start[2]["queries"]) / elapsed,
    }
    for name in ("statements", "data_version", "checks"):
        found[f"{name}_per_s"] = (end[2][name] - start[2][name]) / elapsed
    if start[3] is not None and end[3] is not None:
        # Less the one transaction of the reading connection itself, per read.
        found["server_xacts_per_s"] = (end[3] - start[3] - 1) / elapsed
    return found


def summary(reps: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each figure as median, min and max over the repetitions."""
    names = sorted({name for rep in reps for name in rep})
    return {
        name: {
            "median": statistics.median(rep[name] for rep in reps if name in rep),
            "min": min(rep[name] for rep in reps if name in rep),
            "max": max(rep[name] for rep in reps if name in rep),
        }
        for name in names
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.idle", description="The CPU and query rate of an idle worker."
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window per rep")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--reps", type=int, default=3, help="repetitions")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("OPENWORKFLOW_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--child", nargs=3, metavar=("KIND", "URL", "SCHEMA"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.reps < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--reps and --seconds must be positive, --warmup not negative")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the repetitions and print the report."""
    args = parse_args(argv)
    if args.child:
        from openworkflow import event_loop

        event_loop.run(child(*args.child))
        return
    kinds = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    results: dict[str, Any] = {"seconds": args.seconds, "reps": args.reps}
    for kind in kinds:
        reps = []
        for number in range(1, args.reps + 1):
            print(f"running {kind} {number}/{args.reps} ...", file=sys.stderr)
            reps.append(measure_once(kind, args))
        results[kind] = summary(reps)
    if args.json:
        print(json.dumps(results))
        return
    for kind in kinds:
        print(f"Idle worker, {kind}: over {args.seconds:g} s, median (min-max) of {args.reps} reps")
        for name, spread in results[kind].items():
            print(f"  {name:<20} {spread['median']:.3f} ({spread['min']:.3f}-{spread['max']:.3f})")


if __name__ == "__main__":
    main()
