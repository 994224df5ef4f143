"""Timers on an idle worker: how late durable sleeps wake, and what idling costs.

    .venv/bin/python -m benchmarks.timers --backend sqlite|postgres [--reps 3]
        [--sleeps 200] [--batch 10] [--idle-s 20] [--postgres-url URL]

Each repetition, in a fresh target (a SQLite file in a temporary folder; a
fresh PostgreSQL schema, dropped at the end) and a fresh namespace, runs one
worker in this process (concurrency 10) and measures:

* lateness: ``--sleeps`` runs of :func:`timer_lateness`, started ``--batch``
  at a time (the next batch once the last one finished, so the worker is idle
  but for them), each sleeping a random 50-500 ms with ``step.sleep``. A step
  before the sleep notes the wall clock it should wake at (so the figure also
  holds the few milliseconds between that step and the sleep's write), the
  step after it the wall clock it resumed at; lateness is the difference.
* idle CPU: the process's CPU time (all threads: the event loop, the SQLite
  ``data_version`` watcher, the PostgreSQL listener) over ``--idle-s``
  seconds with nothing to do, as a percentage of one core.
* idle queries: calls of the worker's backend methods (each one query or
  more) over the same window, per second. The SQLite watcher's ``PRAGMA
  data_version`` reads touch no table and are not counted.

Printed: each figure as median (min-max) over ``--reps`` repetitions. The
PostgreSQL URL comes from ``--postgres-url``, else ``OPENWORKFLOW_TEST_POSTGRES_URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import inspect
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.cases import open_backend
from benchmarks.claim_plan_keys import Spread
from openworkflow import OpenWorkflow, Step, Worker, event_loop, workflow
from openworkflow.core.backend import Backend

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SQLITE_SCHEMA = "openworkflow"  # unused by SQLite
SETTLE_S = 2.0
"""Pause after the last sleep before the idle window (the worker's waits lengthen)."""


@workflow(name="timer-lateness")
async def timer_lateness(step: Step, input: dict[str, Any]) -> float:
    """Sleep ``input["ms"]`` durably; return how late it woke, in ms (wall clock)."""
    sleep_ms = int(input["ms"])
    due: float = await step.run("due", lambda: time.time() + sleep_ms / 1000)
    await step.sleep("nap", f"{sleep_ms}ms")
    late: float = await step.run("late", lambda: (time.time() - due) * 1000)
    return late


@dataclass
class Repetition:
    """One repetition's figures."""

    lateness_ms: list[float]
    idle_cpu_percent: float
    idle_queries_per_s: float


def count_calls(backend: Backend) -> list[int]:
    """Count every call of the backend's public coroutine methods; the one-item counter."""
    counter = [0]

    def wrap(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def counted(*args: Any, **kwargs: Any) -> Any:
            counter[0] += 1
            return await method(*args, **kwargs)

        return counted

    for name in dir(type(backend)):
        if name.startswith("_"):
            continue
        method = getattr(backend, name, None)
        if inspect.iscoroutinefunction(method):
            setattr(backend, name, wrap(method))
    return counter


async def lateness(client: OpenWorkflow, sleeps: int, batch: int) -> list[float]:
    """The lateness of ``sleeps`` durable sleeps, in ms, ``batch`` at a time."""
    found: list[float] = []
    for first in range(0, sleeps, batch):
        handles = [
            await client.run(timer_lateness, {"ms": random.randint(50, 500)})
            for _ in range(min(batch, sleeps - first))
        ]
        for handle in handles:
            found.append(float(await handle.result(timeout="60s")))
    return found


async def measure_once(kind: str, url: str, schema: str, args: argparse.Namespace) -> Repetition:
    """One repetition on a fresh namespace."""
    backend = open_backend(kind, url, f"timers-{uuid.uuid4()}", schema)
    opener = getattr(backend, "open", None)
    if opener is not None:
        await opener()
    counter = count_calls(backend)
    client = OpenWorkflow(backend)
    try:
        async with Worker(backend, [timer_lateness], concurrency=10):
            late = await lateness(client, args.sleeps, args.batch)
            await asyncio.sleep(SETTLE_S)
            calls, cpu, wall = counter[0], time.process_time(), time.monotonic()
            await asyncio.sleep(args.idle_s)
            elapsed = time.monotonic() - wall
            cpu_percent = (time.process_time() - cpu) / elapsed * 100
            queries = (counter[0] - calls) / elapsed
    finally:
        await backend.stop()
    return Repetition(late, cpu_percent, queries)


@contextlib.contextmanager
def _target(kind: str, postgres_url: str) -> Iterator[tuple[str, str]]:
    """A fresh (url, schema): a temporary SQLite file, or a schema dropped after."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="ow-timers-") as folder:
            yield str(Path(folder) / "timers.db"), SQLITE_SCHEMA
        return
    schema = f"timers_{uuid.uuid4().hex[:8]}"
    try:
        yield postgres_url, schema
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )


def percentile(values: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(len(ordered) * percent / 100) - 1))]


def report(kind: str, args: argparse.Namespace, reps: Sequence[Repetition]) -> list[str]:
    """The report's lines: each figure as median (min-max) over the repetitions."""
    rows = [
        ("lateness p50 ms", [percentile(rep.lateness_ms, 50) for rep in reps]),
        ("lateness p99 ms", [percentile(rep.lateness_ms, 99) for rep in reps]),
        ("lateness max ms", [max(rep.lateness_ms) for rep in reps]),
        ("idle CPU % of a core", [rep.idle_cpu_percent for rep in reps]),
        ("idle backend calls/s", [rep.idle_queries_per_s for rep in reps]),
    ]
    width = max(len(name) for name, _ in rows)
    return [
        f"Timers on an idle worker, {kind}: {args.sleeps} durable sleeps of 50-500 ms, "
        f"{args.batch} at a time; idle window {args.idle_s:g} s; "
        f"median (min-max) over {len(reps)} repetitions",
        "",
        *(f"{name.ljust(width)}  {Spread.of(values)}" for name, values in rows),
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.timers",
        description="Durable sleep lateness and idle cost of a worker.",
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres"], required=True)
    parser.add_argument("--reps", type=int, default=3, help="repetitions")
    parser.add_argument("--sleeps", type=int, default=200, help="durable sleeps per repetition")
    parser.add_argument("--batch", type=int, default=10, help="sleeps started together")
    parser.add_argument("--idle-s", type=float, default=20.0, help="idle window, seconds")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("OPENWORKFLOW_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
    )
    args = parser.parse_args(argv)
    if args.reps < 1 or args.sleeps < 1 or args.batch < 1 or args.idle_s <= 0:
        parser.error("--reps, --sleeps, --batch and --idle-s must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the repetitions and print the report."""
    args = parse_args(argv)
    reps = []
    for number in range(1, args.reps + 1):
        print(f"running {args.backend} {number}/{args.reps} ...", file=sys.stderr)
        with _target(args.backend, args.postgres_url) as (url, schema):
            reps.append(event_loop.run(measure_once(args.backend, url, schema, args)))
    print("\n".join(report(args.backend, args, reps)))


if __name__ == "__main__":
    main()
