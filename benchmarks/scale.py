"""Reads, counts, dashboard pages and pruning on a big table.

    .venv/bin/python -m benchmarks.scale --backend postgres|sqlite [--runs 1000000]
        [--postgres-url URL] [--repeat 5] [--bench-runs 2000] [--prune-batch 500]
        [--prune-pause 0.1] [--keep] [--compare-runs 1000] [--compare-repeat 3]
        [--claim-runs 9] [--big-table-only]

Big tables first (``benchmarks/scale_claims.py``): the throughput workload
(``--compare-runs`` runs, ``--compare-repeat`` times) on the empty tables and,
on PostgreSQL, ``EXPLAIN ANALYZE`` of the claim in the scale namespace; then
the same after the generation, with the median and the change against the
empty tables. ``--big-table-only`` stops there.

Generates a realistic namespace (``benchmarks/scale_data.py``: finished runs
over 90 days with 4 step attempts and 2 tags each, 10,000 pending and 1,000
parked runs) in a fresh PostgreSQL schema or SQLite file; that generation is
the only raw SQL of this benchmark, everything measured goes through the
backend, the client or the dashboard (``httpx.ASGITransport`` on
``create_app``). Each read is timed ``--repeat`` times after one warm-up call
and printed as median (min-max) in ms (so ``GET /metrics`` on a big SQLite
table shows a kept collection; its counts are the two ``count_*`` lines).

Then pruning: the runs older than 80 days are pruned alone (runs deleted per
second, ``--prune-batch`` runs per batch), and the normal throughput workload
(``benchmarks.cases throughput``, ``--bench-runs`` runs of 4 no-op steps, in
its own process and namespace of the same tables) is run alone, then while a
pruner deletes runs older than 60 days flat out, then with ``--prune-pause``
seconds between its batches; the drop in runs per second is printed. The
schema or file is removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

from benchmarks.cases import open_backend
from benchmarks.scale_claims import claim_costs, compare_lines, repeated_throughput, throughput
from benchmarks.scale_data import REGIONS, Shape, generate_postgres, generate_sqlite
from openworkflow import OpenWorkflow
from openworkflow.core.backend import Backend
from openworkflow.dashboard import create_app
from openworkflow.retention import prune_runs

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
NAMESPACE = "scale"
PRUNE_ALONE_AGE = "80d"
PRUNE_CONCURRENT_AGE = "60d"


def _figures(samples_s: list[float]) -> str:
    ms = [sample * 1000 for sample in samples_s]
    return f"{statistics.median(ms):8.2f} ms  ({min(ms):.2f}-{max(ms):.2f})"


async def _time(call: Callable[[], Awaitable[Any]], repeat: int) -> list[float]:
    await call()  # warm-up: the first call pays for connections and caches
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


def _page(http: httpx.AsyncClient, path: str) -> Callable[[], Awaitable[Any]]:
    async def get() -> None:
        response = await http.get(path)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:200]}")

    return get


async def measure_reads(backend: Backend, repeat: int) -> list[tuple[str, list[float]]]:
    """Time the reads a dashboard and an operator make, through the public API."""
    client = OpenWorkflow(backend)
    first = (await client.list_runs(limit=25, status="completed")).data[0]
    one = {"customer": "c-42"}
    two = {"customer": "c-42", "region": REGIONS[(42 * 31) % 4]}
    broad = {"region": two["region"], "customer": "c-42"}
    region = {"region": REGIONS[0]}
    app = create_app(backend)
    transport = httpx.ASGITransport(app=app)
    cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("list_runs first page (25)", lambda: client.list_runs(limit=25)),
        ("list_runs tag customer=c-42", lambda: client.list_runs(limit=25, tags=one)),
        ("list_runs two tags", lambda: client.list_runs(limit=25, tags=two)),
        ("list_runs two tags, broad first", lambda: client.list_runs(limit=25, tags=broad)),
        ("list_runs tag region (25 %)", lambda: client.list_runs(limit=25, tags=region)),
        ("count_workflow_runs", backend.count_workflow_runs),
        ("count_step_attempts", backend.count_step_attempts),
    ]
    results = [(label, await _time(call, repeat)) for label, call in cases]
    async with httpx.AsyncClient(transport=transport, base_url="http://dashboard") as http:
        pages = [
            ("GET / (runs list + counts)", "/"),
            ("GET /metrics", "/metrics"),
            ("GET /runs/{id}", f"/runs/{first.id}"),
        ]
        for label, path in pages:
            results.append((label, await _time(_page(http, path), repeat)))
    return results


async def measure_prune_alone(args: argparse.Namespace, backend: Backend) -> tuple[int, float]:
    """Prune every run older than 80 days; (runs deleted, seconds)."""
    started = time.perf_counter()
    deleted = await prune_runs(backend, PRUNE_ALONE_AGE, batch_size=args.prune_batch)
    return deleted, time.perf_counter() - started


async def _throughput_case(args: argparse.Namespace, url: str, schema: str) -> dict[str, Any]:
    """The throughput workload of ``--bench-runs`` runs, in its own process."""
    return await throughput(args.backend, url, schema, args.bench_runs)


async def _beside_pruner(
    args: argparse.Namespace, backend: Backend, url: str, schema: str, pause_s: float
) -> tuple[dict[str, Any], int, float]:
    """The throughput workload while a pruner deletes batches (``pause_s`` between them)."""
    deleted = 0
    stop = asyncio.Event()

    async def pruner() -> None:
        nonlocal deleted
        while not stop.is_set():
            count = await prune_runs(
                backend, PRUNE_CONCURRENT_AGE, batch_size=args.prune_batch, max_batches=1
            )
            deleted += count
            await asyncio.sleep(pause_s if count else 0.05)

    task = asyncio.create_task(pruner())
    started = time.perf_counter()
    try:
        beside = await _throughput_case(args, url, schema)
    finally:
        stop.set()
        await task
    return beside, deleted, time.perf_counter() - started


async def measure_prune_concurrent(
    args: argparse.Namespace, backend: Backend, url: str, schema: str
) -> list[str]:
    """The throughput workload alone, then beside a pruner flat out and with pauses."""
    alone = await _throughput_case(args, url, schema)
    rate_alone = args.bench_runs / float(alone["process_s"])
    lines = [
        f"throughput workload ({args.bench_runs} runs x 4 steps) alone: {rate_alone:,.0f} runs/s"
    ]
    for pause_s in (0.0, args.prune_pause):
        beside, deleted, elapsed = await _beside_pruner(args, backend, url, schema, pause_s)
        rate = args.bench_runs / float(beside["process_s"])
        lines.append(
            f"  beside a pruner ({pause_s * 1000:.0f} ms between batches of {args.prune_batch}): "
            f"{rate:,.0f} runs/s, drop {100 * (1 - rate / rate_alone):.1f} %; it deleted "
            f"{deleted:,} runs meanwhile ({deleted / elapsed:,.0f} runs/s)"
        )
    return lines


def _migrate_postgres(args: argparse.Namespace, schema: str) -> None:
    async def migrate() -> None:
        backend = open_backend("postgres", args.postgres_url, NAMESPACE, schema)
        await backend.open()  # type: ignore[attr-defined]
        await backend.stop()

    asyncio.run(migrate())


def _generate_postgres(args: argparse.Namespace, schema: str, shape: Shape) -> float:
    started = time.perf_counter()
    generate_postgres(args.postgres_url, schema, NAMESPACE, shape)
    return time.perf_counter() - started


def _prepare_sqlite(path: str, shape: Shape) -> float:
    started = time.perf_counter()
    generate_sqlite(path, NAMESPACE, shape)
    return time.perf_counter() - started


def _with_and_without(
    args: argparse.Namespace, url: str, schema: str, generate: Callable[[], float]
) -> None:
    """Throughput (and the PostgreSQL claim) on the empty tables, generate, then again."""
    postgres = args.backend == "postgres"
    empty = asyncio.run(repeated_throughput(args, url, schema))
    claims = asyncio.run(claim_costs(url, schema, NAMESPACE, args.claim_runs)) if postgres else []
    print(f"generated in {generate():.1f} s" + (f" (schema {schema})" if postgres else f" ({url})"))
    big = asyncio.run(repeated_throughput(args, url, schema))
    if postgres:
        runs = args.claim_runs
        print(f"\nclaim, EXPLAIN ANALYZE median (min-max) of {runs} rolled-back runs, ms")
        print("empty namespace:")
        print("\n".join(claims))
        print(f"with the generated runs ({args.runs:,} finished, pending and parked as above):")
        print("\n".join(asyncio.run(claim_costs(url, schema, NAMESPACE, runs))))
    print()
    print("\n".join(compare_lines(empty, big, args.compare_runs)))


async def _measure(args: argparse.Namespace, url: str, schema: str) -> None:
    backend = open_backend(args.backend, url, NAMESPACE, schema)
    opener = getattr(backend, "open", None)
    if opener is not None:
        await opener()
    try:
        print(f"\nreads ({args.repeat} timings after a warm-up: median (min-max))")
        for label, samples in await measure_reads(backend, args.repeat):
            print(f"  {label:<32} {_figures(samples)}")
        deleted, seconds = await measure_prune_alone(args, backend)
        print(
            f"\nprune alone: {deleted:,} runs older than {PRUNE_ALONE_AGE} in {seconds:.1f} s "
            f"= {deleted / seconds:,.0f} runs/s (batches of {args.prune_batch})"
        )
        for line in await measure_prune_concurrent(args, backend, url, schema):
            print(line)
    finally:
        await backend.stop()


def main() -> None:
    """Generate, measure, clean up."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--backend", choices=["postgres", "sqlite"], required=True)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--bench-runs", type=int, default=2000)
    parser.add_argument("--prune-batch", type=int, default=500, help="runs per prune batch")
    parser.add_argument(
        "--prune-pause", type=float, default=0.1, help="seconds between the paused pruner's batches"
    )
    parser.add_argument("--keep", action="store_true", help="keep the schema or file")
    parser.add_argument("--compare-runs", type=int, default=1000)
    parser.add_argument("--compare-repeat", type=int, default=3)
    parser.add_argument("--claim-runs", type=int, default=9)
    parser.add_argument(
        "--big-table-only", action="store_true", help="skip the reads and the pruning"
    )
    args = parser.parse_args()
    shape = Shape(runs=args.runs)
    print(
        f"{args.backend}: {shape.runs:,} finished runs x 4 steps, {shape.pending:,} pending, "
        f"{shape.parked:,} parked (load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs)"
    )
    if args.backend == "postgres":
        schema = f"ow_scale_{uuid.uuid4().hex[:8]}"
        try:
            _migrate_postgres(args, schema)
            url = args.postgres_url
            _with_and_without(args, url, schema, lambda: _generate_postgres(args, schema, shape))
            if not args.big_table_only:
                asyncio.run(_measure(args, url, schema))
        finally:
            if not args.keep:
                with psycopg.connect(args.postgres_url, autocommit=True) as connection:
                    drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
                    connection.execute(drop.format(sql.Identifier(schema)))
        return
    folder = tempfile.mkdtemp(prefix="ow-scale-")
    path = str(Path(folder) / "scale.db")
    try:
        asyncio.run(open_backend("sqlite", path, NAMESPACE, "").stop())
        _with_and_without(args, path, "", lambda: _prepare_sqlite(path, shape))
        if not args.big_table_only:
            asyncio.run(_measure(args, path, ""))
    finally:
        if not args.keep:
            for suffix in ("", "-wal", "-shm"):
                Path(path + suffix).unlink(missing_ok=True)
            os.rmdir(folder)


if __name__ == "__main__":
    main()
