"""Throughput and pickup latency, against the TypeScript original in the same run.

    .venv/bin/python -m benchmarks [--runs 1000 5000] [--backends postgres sqlite]
        [--peer openworkflow-ts] [--pickup-runs 200] [--postgres-url URL]
        [--step-styles sync async] [--reps 3] [--json]

The sync-step comparison against the original alone (its step bodies are plain
functions too, ``() => index``)::

    .venv/bin/python -m benchmarks --runs 1000 --step-styles sync --peer openworkflow-ts \
        --pickup-runs 0 --reps 3

Throughput is the original's own benchmark (``benchmarks/basic`` upstream):
enqueue N runs of a workflow with 4 no-op steps concurrently, then one
worker at concurrency 100 processes them; each case runs in a fresh process
(so peak RSS is its own) in a fresh namespace, and the PostgreSQL rows are
deleted afterwards. ``--step-styles`` picks the step bodies: ``sync`` (lambdas,
as the original's benchmark and the README write them; each runs in a worker
thread) and ``async`` (``async def``, awaited on the loop). With ``--peer
openworkflow-ts`` the npm package ``openworkflow`` (pinned, installed into a
cache folder) does the same in the same run and the table shows our figures as
a ratio of its (of the medians). Each case runs ``--reps`` times; even
repetitions run ours first, odd ones the original first, and the table shows
the median with the range. ``--json`` adds one JSON line at the end (every
repetition's figures, and the medians), for a report generator.

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

from benchmarks.cases import STEP_STYLES, open_backend, pickup
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


def run_ours(
    backend: str, runs: int, concurrency: int, postgres_url: str, step_style: str = "sync"
) -> dict[str, Any]:
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
            f"--step-style={step_style}",
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


def _median_range(values: list[float], digits: int = 0) -> str:
    ordered = sorted(values)
    middle = statistics.median(ordered)
    if len(ordered) < 2:
        return f"{middle:,.{digits}f}"
    return f"{middle:,.{digits}f} ({ordered[0]:,.{digits}f}-{ordered[-1]:,.{digits}f})"


def rate(figures: dict[str, Any]) -> float:
    """Workflows per second of one throughput case."""
    return int(figures["runs"]) / float(figures["process_s"])


def cpu_ms_per_run(figures: dict[str, Any]) -> float:
    """The worker's CPU per workflow, in ms."""
    cpu = float(figures["cpu_user_s"]) + float(figures["cpu_sys_s"])
    return 1000 * cpu / int(figures["runs"])


def _row(label: str, reps: list[dict[str, Any]], peer: list[dict[str, Any]] | None) -> list[str]:
    runs = int(reps[0]["runs"])
    steps = int(reps[0]["steps_per_run"])
    rates = [rate(figures) for figures in reps]
    ratio = ""
    if peer:
        ratio = f"{statistics.median(rates) / statistics.median(rate(f) for f in peer):.2f}x"
    return [
        label,
        str(runs),
        str(len(reps)),
        f"{statistics.median(runs / float(f['enqueue_s']) for f in reps):,.0f}",
        _median_range(rates),
        f"{steps * statistics.median(rates):,.0f}",
        _median_range([cpu_ms_per_run(f) for f in reps], 2),
        f"{statistics.median(float(f['peak_rss_mb']) for f in reps):.0f}",
        ratio,
    ]


HEADER = [
    "engine / backend",
    "runs",
    "reps",
    "enqueue/s",
    "workflows/s median (range)",
    "steps/s",
    "worker CPU ms/workflow",
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


def _parse_args() -> argparse.Namespace:
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
    parser.add_argument("--step-styles", nargs="+", choices=STEP_STYLES, default=list(STEP_STYLES))
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each case")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    return parser.parse_args()


Results = dict[str, list[dict[str, Any]]]


def run_throughput(args: argparse.Namespace, peer: Any) -> tuple[Results, Results]:
    """Every case ``--reps`` times: ours by ``backend/style/runs``, the peer's by ``backend/runs``.

    Even repetitions run ours first, odd ones the original first, so a machine
    that slows down (or warms up) during the run does not favour one side.
    """
    ours: Results = {}
    theirs: Results = {}
    for rep in range(args.reps):
        for backend in args.backends:
            for runs in args.runs:
                # A step style for ours, None for the original.
                order: list[str | None] = list(args.step_styles)
                if peer is not None and (backend == "postgres" or peer.sqlite_supported):
                    order.append(None)
                if rep % 2:
                    order.reverse()
                for style in order:
                    print(
                        f"rep {rep + 1}/{args.reps}: {backend} x {runs}, "
                        + (f"{PEER} (sync steps)" if style is None else f"ours, {style} steps"),
                        file=sys.stderr,
                    )
                    if style is None:
                        figures = run_peer(peer, backend, runs, args.concurrency, args.postgres_url)
                        theirs.setdefault(f"{backend}/{runs}", []).append(figures)
                    else:
                        figures = run_ours(
                            backend, runs, args.concurrency, args.postgres_url, style
                        )
                        ours.setdefault(f"{backend}/{style}/{runs}", []).append(figures)
    return ours, theirs


def _table_rows(args: argparse.Namespace, ours: Results, theirs: Results) -> list[list[str]]:
    rows = []
    for backend in args.backends:
        for runs in args.runs:
            peer = theirs.get(f"{backend}/{runs}")
            for style in args.step_styles:
                mine = ours[f"{backend}/{style}/{runs}"]
                rows.append(_row(f"python / {backend} / {style} steps", mine, peer))
            if peer:
                rows.append(_row(f"{PEER} / {backend} / sync steps", peer, None))
    return rows


def _summary(ours: Results, theirs: Results) -> dict[str, Any]:
    """Medians and ranges per case, and our ratio to the original where it ran."""
    cases: dict[str, Any] = {}
    for key, reps in [*ours.items(), *((f"{PEER}/{k}", v) for k, v in theirs.items())]:
        rates = [rate(figures) for figures in reps]
        cases[key] = {
            "workflows_per_s": {
                "median": statistics.median(rates),
                "min": min(rates),
                "max": max(rates),
            },
            "cpu_ms_per_workflow": statistics.median(cpu_ms_per_run(f) for f in reps),
            "reps": len(reps),
        }
        peer = theirs.get(f"{key.split('/')[0]}/{key.rsplit('/', 1)[-1]}")
        if peer and not key.startswith(PEER):
            cases[key]["vs_peer"] = statistics.median(rates) / statistics.median(
                rate(f) for f in peer
            )
    return cases


def _print_growth(args: argparse.Namespace, ours: Results) -> None:
    style = args.step_styles[0]
    for backend in args.backends:
        if len(args.runs) >= 2:
            small, large = min(args.runs), max(args.runs)
            times = [
                statistics.median(float(f["process_s"]) for f in ours[f"{backend}/{style}/{n}"])
                for n in (small, large)
            ]
            print(
                f"\n{backend}, {style} steps: {large} runs took {times[1] / times[0]:.2f}x the"
                f" time of {small} (linear would be {large / small:.1f}x)"
            )


def main() -> None:
    """Run the cases and print the tables (and with ``--json``, one JSON line)."""
    args = _parse_args()
    peer = None
    if args.peer is not None:
        from benchmarks.peer.openworkflow_ts import prepare

        peer = prepare()
        print(f"peer: npm openworkflow on node {peer.node}", file=sys.stderr)

    ours, theirs = run_throughput(args, peer)
    print()
    print_table(_table_rows(args, ours, theirs))
    _print_growth(args, ours)

    pickups: dict[str, dict[str, float]] = {}
    if args.pickup_runs > 0:
        print()
        for backend in args.backends:
            figures = run_pickup(backend, args.pickup_runs, args.postgres_url)
            pickups[backend] = figures
            print(
                f"pickup latency {backend:<8} p50 {figures['pickup_p50']:6.1f} ms  "
                f"p99 {figures['pickup_p99']:6.1f} ms   result() after completion "
                f"p50 {figures['result_p50']:6.1f} ms  p99 {figures['result_p99']:6.1f} ms  "
                f"({args.pickup_runs} runs)"
            )
    if args.json:
        document = {
            "peer": None if peer is None else f"npm openworkflow on {peer.node}",
            "reps": args.reps,
            "summary": _summary(ours, theirs),
            "ours": ours,
            "theirs": theirs,
            "pickup": pickups,
        }
        print(json.dumps(document), flush=True)


if __name__ == "__main__":
    main()
