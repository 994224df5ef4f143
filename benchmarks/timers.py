"""Timers on an idle worker: how late durable sleeps, retry backoffs and scheduled starts begin.

    .venv/bin/python -m benchmarks.timers [--backend sqlite|postgres|both] [--reps 3]
        [--sleeps 100] [--batch 10] [--postgres-url URL] [--json]

Each repetition, in a fresh target (a SQLite file in a temporary folder; a
fresh PostgreSQL schema, dropped at the end) and a fresh namespace, runs one
worker in this process (concurrency 10) and starts ``--sleeps`` runs of each
kind, ``--batch`` at a time (the next batch once the last one finished, so
the worker is idle but for them), each due a random 50-500 ms ahead:

* sleep: ``step.sleep``; lateness = the wall clock at the start of the step
  after the sleep, less the sleep's stored ``resumeAt``;
* retry: a step that fails once under ``RetryPolicy(initial_interval=...)``;
  lateness = the wall clock at the second attempt's start, less the moment
  of the first failure plus the interval (the worker computes the retry's
  due time a few microseconds after that moment);
* start: ``ow.run(..., available_at=T)``; lateness = the wall clock at the
  first step's start, less ``T``.

Two figures per kind: *claimed*, from the due time to the moment the claim
that resumed (or started) the run returned it to the worker: how late the
worker woke and asked; and *step*, to the start of the step after the timer,
which adds loading the history, closing the sleep and replaying up to that
step. Printed: p50, p99 and max (nearest-rank over the repetition's runs),
each as median (min-max) over ``--reps`` repetitions (``--json``: one JSON
object, ``{backend: {figure: {median, min, max}}}``). The
PostgreSQL URL comes from ``--postgres-url``, else ``OPENWORKFLOW_TEST_POSTGRES_URL``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.cases import open_backend
from benchmarks.claim_plan_keys import Spread
from openworkflow import OpenWorkflow, RetryPolicy, Step, Worker, event_loop, workflow
from openworkflow.core.backend import Backend, ListStepAttemptsParams
from openworkflow.core.waits import WaitContext

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SQLITE_SCHEMA = "openworkflow"  # unused by SQLite
KINDS = ("sleep", "retry", "start")


@workflow(name="timer-sleep")
async def timer_sleep(step: Step, input: dict[str, Any]) -> float:
    """Sleep ``input["ms"]`` durably; return the wall clock (epoch s) after it."""
    await step.sleep("nap", f"{int(input['ms'])}ms")
    woke: float = await step.run("woke", time.time)
    return woke


_first_failures: dict[str, float] = {}


@workflow(name="timer-retry")
async def timer_retry(step: Step, input: dict[str, Any]) -> list[float]:
    """A step failing once, retried after ``input["ms"]``: [retry start, its due time] (epoch s)."""
    key, interval_s = str(input["key"]), int(input["ms"]) / 1000

    def body() -> list[float]:
        now = time.time()
        if key not in _first_failures:
            _first_failures[key] = now
            raise RuntimeError("the first attempt fails")
        return [now, _first_failures[key] + interval_s]

    policy = RetryPolicy(initial_interval=f"{int(input['ms'])}ms", maximum_attempts=2)
    timing: list[float] = await step.run("flaky", body, retry_policy=policy)
    return timing


@workflow(name="timer-start")
async def timer_start(step: Step, input: dict[str, Any]) -> list[float]:
    """Started at ``input["due"]`` (epoch s): [the first step's start, the due time]."""
    now: float = await step.run("late", time.time)
    return [now, float(input["due"])]


async def sleep_due(backend: Backend, run_id: str) -> float:
    """The sleep's stored resume time (epoch s)."""
    page = await backend.list_step_attempts(ListStepAttemptsParams(workflow_run_id=run_id))
    for attempt in page.data:
        wait = WaitContext.of(attempt)
        if wait is not None and wait.until is not None:
            return wait.until.timestamp()
    raise AssertionError(f"run {run_id} has no sleep")


class ClaimClock:
    """Records when each claim returned each run (wraps the worker's backend method)."""

    def __init__(self, backend: Backend) -> None:
        self.last_claim: dict[str, float] = {}
        claim = backend.claim_workflow_runs

        async def timed(params: Any) -> Any:
            runs = await claim(params)
            now = time.time()
            for run in runs:
                self.last_claim[run.id] = now
            return runs

        backend.claim_workflow_runs = timed  # type: ignore[method-assign]


async def _start_batch(client: OpenWorkflow, kind: str, count: int) -> list[Any]:
    handles = []
    for _ in range(count):
        ms = random.randint(50, 500)
        if kind == "sleep":
            handles.append(await client.run(timer_sleep, {"ms": ms}))
        elif kind == "retry":
            handles.append(await client.run(timer_retry, {"ms": ms, "key": str(uuid.uuid4())}))
        else:
            due = datetime.now(UTC) + timedelta(milliseconds=ms)
            handles.append(
                await client.run(timer_start, {"due": due.timestamp()}, available_at=due)
            )
    return handles


async def lateness(
    backend: Backend, claims: ClaimClock, kind: str, args: argparse.Namespace
) -> tuple[list[float], list[float]]:
    """The claimed and step lateness of ``--timers`` timers of ``kind``, in ms."""
    claimed: list[float] = []
    stepped: list[float] = []
    client = OpenWorkflow(backend)
    for first in range(0, args.timers, args.batch):
        for handle in await _start_batch(client, kind, min(args.batch, args.timers - first)):
            result = await handle.result(timeout="60s")
            if kind == "sleep":
                step_at, due = float(result), await sleep_due(backend, handle.id)
            else:
                step_at, due = float(result[0]), float(result[1])
            claimed.append((claims.last_claim[handle.id] - due) * 1000)
            stepped.append((step_at - due) * 1000)
    return claimed, stepped


async def measure_once(
    kind: str, url: str, schema: str, args: argparse.Namespace
) -> dict[str, list[float]]:
    """One repetition on a fresh namespace: the lateness of each timer kind, in ms."""
    backend = open_backend(kind, url, f"timers-{uuid.uuid4()}", schema)
    claims = ClaimClock(backend)
    found: dict[str, list[float]] = {}
    try:
        async with Worker(backend, [timer_sleep, timer_retry, timer_start], concurrency=10):
            for timer in KINDS:
                found[f"{timer} claimed"], found[f"{timer} step"] = await lateness(
                    backend, claims, timer, args
                )
    finally:
        await backend.stop()
    return found


@contextlib.contextmanager
def target(kind: str, postgres_url: str, prefix: str) -> Iterator[tuple[str, str]]:
    """A fresh (url, schema): a temporary SQLite file, or a schema dropped after."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix=f"ow-{prefix}-") as folder:
            yield str(Path(folder) / f"{prefix}.db"), SQLITE_SCHEMA
        return
    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
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


def figures(reps: Sequence[dict[str, list[float]]]) -> list[tuple[str, list[float]]]:
    """Each figure's value per repetition: p50, p99 and max of each timer kind and stage."""
    rows: list[tuple[str, list[float]]] = []
    for timer in (f"{name} {stage}" for name in KINDS for stage in ("claimed", "step")):
        rows.append((f"{timer} p50 ms", [percentile(rep[timer], 50) for rep in reps]))
        rows.append((f"{timer} p99 ms", [percentile(rep[timer], 99) for rep in reps]))
        rows.append((f"{timer} max ms", [max(rep[timer]) for rep in reps]))
    return rows


def report(
    kind: str, args: argparse.Namespace, reps: Sequence[dict[str, list[float]]]
) -> list[str]:
    """The report's lines: each figure as median (min-max) over the repetitions."""
    rows = figures(reps)
    width = max(len(name) for name, _ in rows)
    return [
        f"Timers on an idle worker, {kind}: {args.timers} timers of each kind due 50-500 ms "
        f"ahead, {args.batch} at a time; lateness in ms, median (min-max) over {len(reps)} "
        "repetitions",
        *(f"  {name.ljust(width)}  {Spread.of(values)}" for name, values in rows),
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.timers",
        description="How late durable sleeps, retry backoffs and scheduled starts begin.",
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--reps", type=int, default=3, help="repetitions")
    parser.add_argument(
        "--sleeps",
        "--timers",
        dest="timers",
        type=int,
        default=100,
        help="timers of each kind (sleeps, retries, delayed starts) per rep",
    )
    parser.add_argument("--batch", type=int, default=10, help="timers started together")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("OPENWORKFLOW_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.reps < 1 or args.timers < 1 or args.batch < 1:
        parser.error("--reps, --timers and --batch must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the repetitions and print the report."""
    args = parse_args(argv)
    kinds = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    found: dict[str, Any] = {"sleeps": args.timers, "batch": args.batch, "reps": args.reps}
    for kind in kinds:
        reps = []
        for number in range(1, args.reps + 1):
            print(f"running {kind} {number}/{args.reps} ...", file=sys.stderr)
            with target(kind, args.postgres_url, "timers") as (url, schema):
                reps.append(event_loop.run(measure_once(kind, url, schema, args)))
        if not args.json:
            print("\n".join(report(kind, args, reps)))
        found[kind] = {
            name: {"median": statistics.median(values), "min": min(values), "max": max(values)}
            for name, values in figures(reps)
        }
    if args.json:
        print(json.dumps(found))


if __name__ == "__main__":
    main()
