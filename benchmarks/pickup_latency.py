"""Pickup latency: how soon an idle worker starts a run created by another client.

The client and the worker use separate backend objects (separate pools, as
two processes would), so on PostgreSQL the wake-up travels through
LISTEN/NOTIFY; SQLite shares one database file across two backend objects
and relies on polling. Prints the median and p95 of "created -> first step
running" for each backend, after the worker has been idle long enough to
reach its longest poll backoff (1 s).

Usage: ``.venv/bin/python -m benchmarks.pickup_latency [--runs 20] [--postgres-url URL]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from openworkflow import OpenWorkflow, Step, Worker, workflow
from openworkflow.postgres import PostgresBackend
from openworkflow.sqlite import SqliteBackend

started: dict[str, float] = {}


@workflow(name="pickup-latency")
async def mark_started(step: Step, run: object) -> None:
    """Record when the run's body began (the run id is in the input)."""
    started.setdefault(str(getattr(run, "id", "")), time.perf_counter())


async def measure(client_backend: object, worker_backend: object, runs: int) -> list[float]:
    """Latencies in milliseconds for ``runs`` runs created one at a time."""
    client = OpenWorkflow(client_backend)  # type: ignore[arg-type]
    worker = Worker(worker_backend, [mark_started], concurrency=1)  # type: ignore[arg-type]
    await worker.start()
    latencies: list[float] = []
    try:
        for _ in range(runs):
            await asyncio.sleep(1.5)  # let the worker back off to its longest idle wait
            created = time.perf_counter()
            handle = await client.run(mark_started)
            await handle.result(timeout="10s")
            latencies.append((started[handle.id] - created) * 1000)
    finally:
        await worker.stop()
    return latencies


def report(name: str, latencies: list[float]) -> None:
    """Print median and p95."""
    ordered = sorted(latencies)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    print(
        f"{name:<10} runs={len(ordered):<4} median={statistics.median(ordered):7.1f} ms  "
        f"p95={p95:7.1f} ms  max={ordered[-1]:7.1f} ms"
    )


async def main() -> None:
    """Measure both backends and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    namespace = str(uuid.uuid4())
    client_pg = PostgresBackend(args.postgres_url, namespace, schema="ow_bench")
    worker_pg = PostgresBackend(args.postgres_url, namespace, schema="ow_bench")
    await client_pg.open()
    await worker_pg.open()
    try:
        report("postgres", await measure(client_pg, worker_pg, args.runs))
    finally:
        await client_pg.stop()
        await worker_pg.stop()

    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "bench.db")
        client_lite = SqliteBackend(path, namespace)
        worker_lite = SqliteBackend(path, namespace)
        try:
            report("sqlite", await measure(client_lite, worker_lite, args.runs))
        finally:
            await client_lite.stop()
            await worker_lite.stop()


if __name__ == "__main__":
    asyncio.run(main())
