"""Run streams across processes: how long a ``step.stream`` item takes to reach a reader.

    .venv/bin/python -m benchmarks.stream_latency [--backends sqlite postgres]
        [--items 500] [--runs 3] [--interval-ms 5] [--warmup 10] [--postgres-url URL]

Each run, in a fresh target (a SQLite file in a temporary folder; a fresh
PostgreSQL schema, dropped at the end) and a fresh namespace: this process
creates one run of :func:`stream_latency`, starts a reader in another process
(``async for item in handle.stream(key)``) and, once it waits, a worker in a
third process. The workflow streams ``--warmup`` items, then ``--items``
measured ones, ``--interval-ms`` apart (a plain ``asyncio.sleep``: a steady,
modest pace, so the figure is latency, not a queue draining); each item
carries the wall clock read right before its ``step.stream`` call, and the
reader notes the wall clock as each item reaches it. Latency is receipt minus
write time: the append's commit, the wake-up (PostgreSQL NOTIFY, the SQLite
``data_version`` watcher) and the reader's query. The warm-up items (first
connections, first statements) are not counted.

Printed per backend: p50, p99 and max over one run's measured items, as the
median (min-max) over ``--runs`` runs, in milliseconds. The PostgreSQL URL
comes from ``--postgres-url``, else ``OPENWORKFLOW_TEST_POSTGRES_URL``.

The reader and the worker are this module's own subcommands::

    python -m benchmarks.stream_latency reader --backend B --url U --namespace N
        --schema S --run-id ID     (prints ready, then one JSON line of latencies)
    python -m benchmarks.stream_latency worker --backend B --url U --namespace N
        --schema S                 (prints ready, serves until SIGTERM)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.cases import open_backend
from benchmarks.claim_plan_keys import Spread
from openworkflow import OpenWorkflow, Step, Worker, event_loop, workflow

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SQLITE_SCHEMA = "openworkflow"  # unused by SQLite; the subcommands take one anyway
KEY = "latency"
READY = "ready"
STARTUP_TIMEOUT_S = 60.0


@workflow(name="stream-latency")
async def stream_latency(step: Step, input: dict[str, Any]) -> int:
    """Stream ``warmup + items`` items, each carrying the wall clock of its write."""
    total = int(input["warmup"]) + int(input["items"])
    for index in range(total):
        # Pacing only (a benchmark): a durable wait would be step.sleep.
        await asyncio.sleep(float(input["interval_s"]))
        await step.stream(KEY, {"index": index, "written": time.time()})
    return total


# -- the subcommands (each in a process of its own) ------------------------------------------------


async def read(args: argparse.Namespace) -> None:
    """Read the run's stream; print the latency of each item after the warm-up, in ms."""
    backend = open_backend(args.backend, args.url, args.namespace, args.schema)
    latencies: list[float] = []
    try:
        stream = OpenWorkflow(backend).handle(args.run_id).stream(KEY)
        print(READY, flush=True)
        expected = 0
        async for item in stream:
            received = time.time()
            if item["index"] != expected:  # the stream promises every item once, in order
                raise RuntimeError(f"item {item['index']} arrived, {expected} was expected")
            expected += 1
            if item["index"] >= args.warmup:
                latencies.append((received - float(item["written"])) * 1000)
    finally:
        await backend.stop()
    print(json.dumps(latencies), flush=True)


async def serve(args: argparse.Namespace) -> None:
    """Run a worker of :func:`stream_latency` until SIGTERM; prints ``ready`` once claiming."""
    backend = open_backend(args.backend, args.url, args.namespace, args.schema)
    worker = Worker(backend, [stream_latency], concurrency=1)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await worker.start()
    print(READY, flush=True)
    try:
        await stop.wait()
    finally:
        await worker.stop()
        await backend.stop()


# -- the orchestration (this process) --------------------------------------------------------------


@contextlib.contextmanager
def _target(kind: str, postgres_url: str) -> Iterator[tuple[str, str]]:
    """A fresh (url, schema) for one run: a temporary SQLite file, or a schema dropped after."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="ow-stream-latency-") as folder:
            yield str(Path(folder) / "streams.db"), SQLITE_SCHEMA
        return
    schema = f"stream_latency_{uuid.uuid4().hex[:8]}"
    try:
        yield postgres_url, schema
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )


async def _start(case: str, common: list[str], *extra: str) -> asyncio.subprocess.Process:
    """``python -m benchmarks.stream_latency CASE ...``, once it printed ``ready``."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.stream_latency",
        case,
        *common,
        *extra,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT_S)
    if line.strip() != READY.encode():
        process.kill()
        await process.wait()
        raise RuntimeError(f"the {case} did not start (exit code {process.returncode})")
    return process


async def _end(process: asyncio.subprocess.Process | None) -> None:
    if process is not None and process.returncode is None:
        process.terminate()
        await process.wait()


async def measure_once(kind: str, url: str, schema: str, args: argparse.Namespace) -> list[float]:
    """One run's latencies in ms: a reader process, then a worker process, on a fresh run."""
    namespace = f"stream-latency-{uuid.uuid4()}"
    backend = open_backend(kind, url, namespace, schema)
    common = [f"--backend={kind}", f"--url={url}", f"--namespace={namespace}", f"--schema={schema}"]
    reader = worker = None
    try:
        handle = await OpenWorkflow(backend).run(
            stream_latency,
            {"items": args.items, "warmup": args.warmup, "interval_s": args.interval_ms / 1000},
        )
        reader = await _start("reader", common, f"--run-id={handle.id}", f"--warmup={args.warmup}")
        worker = await _start("worker", common)
        assert reader.stdout is not None
        budget = STARTUP_TIMEOUT_S + (args.items + args.warmup) * args.interval_ms / 100
        line = await asyncio.wait_for(reader.stdout.readline(), budget)
        await handle.result(timeout="60s")
        if await reader.wait() != 0 or not line:
            raise RuntimeError("the reader failed (see its output above)")
    finally:
        await _end(reader)
        await _end(worker)
        await backend.stop()
    latencies: list[float] = json.loads(line)
    if len(latencies) != args.items:
        raise RuntimeError(f"the reader got {len(latencies)} of {args.items} items")
    return latencies


def percentile(values: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(len(ordered) * percent / 100) - 1))]


def summarize(kind: str, runs: Sequence[Sequence[float]]) -> list[str]:
    """The backend's table row: p50, p99 and max per run, as median (min-max) over the runs."""
    p50 = Spread.of([percentile(run, 50) for run in runs])
    p99 = Spread.of([percentile(run, 99) for run in runs])
    peak = Spread.of([max(run) for run in runs])
    return [kind, str(len(runs[0])), str(p50), str(p99), str(peak)]


def table(rows: list[list[str]]) -> list[str]:
    """A Markdown table (readable in a terminal, pasteable into docs)."""
    header = ["backend", "items/run", "p50 ms", "p99 ms", "max ms"]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for index, row in enumerate([header, *rows]):
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        lines.append("| " + " | ".join(cells) + " |")
        if index == 0:
            lines.append("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return lines


def measure(args: argparse.Namespace) -> list[str]:
    """Every backend's runs, then the report's lines."""
    rows = []
    for kind in args.backends:
        runs = []
        for number in range(1, args.runs + 1):
            print(f"running {kind} {number}/{args.runs} ...", file=sys.stderr)
            with _target(kind, args.postgres_url) as (url, schema):
                runs.append(event_loop.run(measure_once(kind, url, schema, args)))
        rows.append(summarize(kind, runs))
    return [
        "Stream latency, write (wall clock before step.stream, worker process) to receipt "
        "(handle.stream, reader process)",
        f"{args.items} items {args.interval_ms:g} ms apart per run after {args.warmup} warm-up "
        f"items; per run p50, p99, max; median (min-max) over {args.runs} runs, in ms",
        "",
        *table(rows),
    ]


def _add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=["postgres", "sqlite"], required=True)
    parser.add_argument("--url", required=True, help="PostgreSQL URL or SQLite file path")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--schema", required=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.stream_latency",
        description="Run stream latency from a worker process to a reader process.",
    )
    cases = parser.add_subparsers(dest="case")
    reader = cases.add_parser("reader", help="(internal) read one run's stream")
    _add_target_arguments(reader)
    reader.add_argument("--run-id", required=True)
    reader.add_argument("--warmup", type=int, default=0)
    _add_target_arguments(cases.add_parser("worker", help="(internal) serve the workflow"))
    parser.add_argument(
        "--backends", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"]
    )
    parser.add_argument("--items", type=int, default=500, help="measured items per run")
    parser.add_argument("--runs", type=int, default=3, help="repetitions per backend")
    parser.add_argument("--interval-ms", type=float, default=5.0, help="pause before each item")
    parser.add_argument("--warmup", type=int, default=10, help="items written first, not counted")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("OPENWORKFLOW_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
    )
    args = parser.parse_args(argv)
    if args.case is None and (args.items < 1 or args.runs < 1 or args.warmup < 0):
        parser.error("--items and --runs must be positive, --warmup 0 or more")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run a subcommand, or the whole benchmark and print its Markdown report."""
    args = parse_args(argv)
    if args.case == "reader":
        event_loop.run(read(args))
    elif args.case == "worker":
        event_loop.run(serve(args))
    else:
        print("\n".join(measure(args)))


if __name__ == "__main__":
    main()
