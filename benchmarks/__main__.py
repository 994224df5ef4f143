"""Throughput and pickup latency, against the TypeScript original in the same run.

    .venv/bin/python -m benchmarks [--runs 1000 5000] [--backends postgres sqlite]
        [--peer openworkflow-ts] [--pickup-runs 200] [--postgres-url URL]

Throughput is the original's own benchmark (``benchmarks/basic`` upstream):
enqueue N runs of a workflow with 4 no-op steps concurrently, then one
worker at concurrency 100 processes them; each case runs in a fresh process
(so peak RSS is its own) in a fresh namespace, and the PostgreSQL rows are
deleted afterwards. With ``--peer openworkflow-ts`` the npm package
``openworkflow`` (pinned, installed into a cache folder) does the same in the
same run and the table shows our figures as a ratio of its.

Pickup latency: an idle worker in another process, runs created one at a
time with a pause between them; latency is "run created" to "first step
started" (wall clock, both sides), and result latency is "step started" to
``handle.result()`` returning (the run completes in between).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.cases import open_backend, pickup
from openworkflow import OpenWorkflow

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SCHEMA = "openworkflow"
PEER = "openworkflow-ts"


def _case_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.cases", *args]


@contextlib.contextmanager
def _target(backend: str, postgres_url: str) -> Iterator[tuple[str, str]]:
    """A fresh (url, namespace) for one case; its rows are deleted afterwards."""
    namespace = f"bench-{uuid.uuid4()}"
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="ow-bench-") as folder:
            yield str(Path(folder) / "bench.db"), namespace
        return
    try:
        yield postgres_url, namespace
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute(
                f'DELETE FROM "{SCHEMA}"."workflow_runs" WHERE "namespace_id" = %s', (namespace,)
            )


def run_ours(backend: str, runs: int, concurrency: int, postgres_url: str) -> dict[str, Any]:
    """One throughput case of this engine, in its own process."""
    with _target(backend, postgres_url) as (url, namespace):
        command = _case_command(
            "throughput",
            f"--backend={backend}",
            f"--url={url}",
            f"--namespace={namespace}",
            f"--schema={SCHEMA}",
            f"--runs={runs}",
            f"--concurrency={concurrency}",
        )
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"benchmark case failed:\n{done.stderr[-4000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result


def run_peer(
    peer: Any, backend: str, runs: int, concurrency: int, postgres_url: str
) -> dict[str, Any]:
    """One throughput case of the TypeScript original, in its own process."""
    from benchmarks.peer.openworkflow_ts import run_case

    return dict(
        run_case(
            peer, backend=backend, runs=runs, concurrency=concurrency, postgres_url=postgres_url
        )
    )


def _row(label: str, figures: dict[str, Any], peer: dict[str, Any] | None) -> list[str]:
    runs = int(figures["runs"])
    steps = runs * int(figures["steps_per_run"])
    rate = runs / float(figures["process_s"])
    ratio = "" if peer is None else f"{rate / (runs / float(peer['process_s'])):.2f}x"
    return [
        label,
        str(runs),
        f"{runs / float(figures['enqueue_s']):,.0f}",
        f"{rate:,.0f}",
        f"{steps / float(figures['process_s']):,.0f}",
        f"{float(figures['enqueue_s']) + float(figures['process_s']):.2f}",
        f"{float(figures['cpu_user_s']) + float(figures['cpu_sys_s']):.2f}",
        f"{float(figures['peak_rss_mb']):.0f}",
        ratio,
    ]


HEADER = [
    "engine / backend",
    "runs",
    "enqueue/s",
    "workflows/s",
    "steps/s",
    "wall s",
    "worker CPU s",
    "peak RSS MB",
    "vs peer",
]


def print_table(rows: list[list[str]]) -> None:
    """A Markdown table (readable in a terminal, pasteable into docs)."""
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    for index, row in enumerate([HEADER, *rows]):
        print(
            "| "
            + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            + " |"
        )
        if index == 0:
            print("|" + "|".join("-" * (width + 2) for width in widths) + "|")


async def measure_pickup(backend: str, url: str, namespace: str, count: int) -> dict[str, float]:
    """Pickup and result latency in ms (p50/p99) against an idle worker in another process."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    worker = await asyncio.create_subprocess_exec(
        *_case_command(
            "worker",
            f"--backend={backend}",
            f"--url={url}",
            f"--namespace={namespace}",
            f"--schema={SCHEMA}",
            "--concurrency=10",
        ),
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    client_backend = open_backend(backend, url, namespace, SCHEMA)
    client = OpenWorkflow(client_backend)
    pickups: list[float] = []
    results: list[float] = []
    try:
        assert worker.stdout is not None
        ready = await asyncio.wait_for(worker.stdout.readline(), 30)
        if ready.strip() != b"ready":
            raise RuntimeError("the pickup worker did not start")
        await asyncio.sleep(1.0)
        for _ in range(count):
            # Idle long enough for the worker to back off between runs.
            await asyncio.sleep(random.uniform(0.05, 0.25))
            created = time.time()
            handle = await client.run(pickup)
            first_step = float(await handle.result(timeout="10s"))
            returned = time.time()
            pickups.append((first_step - created) * 1000)
            results.append((returned - first_step) * 1000)
    finally:
        worker.terminate()
        await worker.wait()
        await client_backend.stop()
    return {
        "pickup_p50": statistics.median(pickups),
        "pickup_p99": _percentile(pickups, 99),
        "result_p50": statistics.median(results),
        "result_p99": _percentile(results, 99),
    }


def _percentile(values: list[float], percent: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(len(ordered) * percent / 100) - 1)]


def run_pickup(backend: str, count: int, postgres_url: str) -> dict[str, float]:
    """Pickup latency on a fresh target."""
    with _target(backend, postgres_url) as (url, namespace):
        if backend == "sqlite":  # create the file (and tables) before two processes open it
            asyncio.run(_touch_sqlite(url, namespace))
        return asyncio.run(measure_pickup(backend, url, namespace, count))


async def _touch_sqlite(url: str, namespace: str) -> None:
    await open_backend("sqlite", url, namespace, SCHEMA).stop()


def main() -> None:
    """Run the cases and print the tables."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--runs", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument(
        "--backends", nargs="+", choices=["postgres", "sqlite"], default=["postgres", "sqlite"]
    )
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--peer", choices=[PEER], default=None)
    parser.add_argument("--pickup-runs", type=int, default=200, help="0 skips the latency part")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args()

    peer = None
    if args.peer is not None:
        from benchmarks.peer.openworkflow_ts import prepare

        peer = prepare()
        print(f"peer: npm openworkflow on node {peer.node}", file=sys.stderr)

    rows: list[list[str]] = []
    ours_by_backend: dict[str, dict[int, dict[str, Any]]] = {}
    for backend in args.backends:
        for runs in args.runs:
            print(f"running {backend} x {runs} ...", file=sys.stderr)
            ours = run_ours(backend, runs, args.concurrency, args.postgres_url)
            ours_by_backend.setdefault(backend, {})[runs] = ours
            theirs = None
            if peer is not None and (backend == "postgres" or peer.sqlite_supported):
                theirs = run_peer(peer, backend, runs, args.concurrency, args.postgres_url)
            rows.append(_row(f"python / {backend}", ours, theirs))
            if theirs is not None:
                rows.append(_row(f"{PEER} / {backend}", theirs, None))
    print()
    print_table(rows)

    for backend, by_runs in ours_by_backend.items():
        if len(by_runs) >= 2:
            small, large = min(by_runs), max(by_runs)
            ratio = float(by_runs[large]["process_s"]) / float(by_runs[small]["process_s"])
            print(
                f"\n{backend}: {large} runs took {ratio:.2f}x the time of {small} "
                f"(linear would be {large / small:.1f}x)"
            )

    if args.pickup_runs > 0:
        print()
        for backend in args.backends:
            figures = run_pickup(backend, args.pickup_runs, args.postgres_url)
            print(
                f"pickup latency {backend:<8} p50 {figures['pickup_p50']:6.1f} ms  "
                f"p99 {figures['pickup_p99']:6.1f} ms   result() after completion "
                f"p50 {figures['result_p50']:6.1f} ms  p99 {figures['result_p99']:6.1f} ms  "
                f"({args.pickup_runs} runs)"
            )


if __name__ == "__main__":
    main()
