"""One benchmark case in a process of its own (so its peak RSS is its own).

``python -m benchmarks.cases throughput --backend postgres --url URL --runs 1000``
    The original's workload: enqueue ``runs`` runs of a workflow with 4 no-op
    steps concurrently, then start one worker (concurrency 100) and time it
    until every run is completed (counts polled every 10 ms through a second
    backend, as a dashboard would; the TypeScript peer's driver does the same).
    Prints one JSON line.

``python -m benchmarks.cases worker --backend sqlite --url PATH``
    An idle worker for the pickup-latency measurement, until SIGTERM.

Both take ``--namespace``; the orchestrator (``python -m benchmarks``) makes a
fresh one per case and deletes its rows afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys
import time
from typing import Any

from openworkflow import OpenWorkflow, Step, Worker, event_loop, workflow
from openworkflow.core.backend import Backend
from openworkflow.postgres import PostgresBackend
from openworkflow.sqlite import SqliteBackend

POLL_S = 0.01
TIMEOUT_S = 900.0
STEPS = 4
"""No-op steps per run, as in the original's benchmark."""


STEP_STYLES = ("sync", "async")
"""``sync``: plain ``def`` bodies (lambdas, as the README writes them), run in a thread;
``async``: ``async def`` bodies, awaited on the event loop."""


async def _async_noop(index: int) -> int:
    return index


@workflow(name="bench")
async def bench(step: Step, input: Any) -> int:
    """The original benchmark's workflow: four steps that do nothing (sync lambdas, in a thread)."""
    total = 0
    for index in range(STEPS):
        total += await step.run(f"step-{index}", lambda index=index: index)
    return total


@workflow(name="bench")
async def bench_async(step: Step, input: Any) -> int:
    """Four no-op ``async def`` steps, awaited on the event loop (no thread)."""
    total = 0
    for index in range(STEPS):
        total += await step.run(f"step-{index}", _async_noop, index)
    return total


def bench_workflow(style: str) -> Any:
    """The benchmark workflow whose step bodies are of ``style`` (see :data:`STEP_STYLES`)."""
    return bench_async if style == "async" else bench


@workflow(name="pickup")
async def pickup(step: Step, input: Any) -> float:
    """Record when the first step started (wall clock, comparable across processes)."""
    return float(await step.run("started", time.time))


def open_backend(
    kind: str, url: str, namespace: str, schema: str, pool_size: int | None = None
) -> Backend:
    """A backend of ``kind`` on ``url`` (a PostgreSQL URL or a SQLite file path)."""
    if kind == "postgres":
        if pool_size is not None:
            return PostgresBackend(url, namespace, schema=schema, max_pool_size=pool_size)
        return PostgresBackend(url, namespace, schema=schema)
    return SqliteBackend(url, namespace)


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def throughput(args: argparse.Namespace) -> dict[str, Any]:
    """Enqueue, then process, and time both."""
    backend = open_backend(args.backend, args.url, args.namespace, args.schema, args.pool_size)
    opener = getattr(backend, "open", None)
    if opener is not None:
        await opener()
    client = OpenWorkflow(backend)
    # Completion is watched through a second backend (its own connection), as a
    # dashboard would, so the observer's count queries are not the engine's.
    observer = open_backend(args.backend, args.url, args.namespace, args.schema, 2)
    try:
        started = time.perf_counter()
        workflow_ = bench_workflow(args.step_style)
        await asyncio.gather(*(client.run(workflow_, index) for index in range(args.runs)))
        enqueue_s = time.perf_counter() - started

        worker = Worker(backend, [workflow_], concurrency=args.concurrency)
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        await worker.start()
        try:
            await _wait_until_completed(OpenWorkflow(observer), args.runs)
            process_s = time.perf_counter() - started
        finally:
            await worker.stop()
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        await backend.stop()
        await observer.stop()
    return {
        "engine": "openworkflow-python",
        "backend": args.backend,
        "runs": args.runs,
        "steps_per_run": STEPS,
        "step_style": args.step_style,
        "concurrency": args.concurrency,
        "enqueue_s": enqueue_s,
        "process_s": process_s,
        "peak_rss_mb": peak_rss_mb(),
        "cpu_user_s": cpu_after.ru_utime - cpu_before.ru_utime,
        "cpu_sys_s": cpu_after.ru_stime - cpu_before.ru_stime,
    }


async def _wait_until_completed(client: OpenWorkflow, runs: int) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        counts = await client.counts()
        if counts.failed or counts.canceled:
            raise RuntimeError(f"runs ended badly: {counts}")
        if counts.completed >= runs:
            return
        await asyncio.sleep(POLL_S)
    raise RuntimeError(f"not all {runs} runs completed within {TIMEOUT_S:.0f} s")


async def idle_worker(args: argparse.Namespace) -> None:
    """Serve ``pickup`` runs until SIGTERM; prints ``ready`` once claiming."""
    backend = open_backend(args.backend, args.url, args.namespace, args.schema)
    worker = Worker(backend, [pickup], concurrency=args.concurrency)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await worker.start()
    print("ready", flush=True)
    try:
        await stop.wait()
    finally:
        await worker.stop()
        await backend.stop()


def main(argv: list[str] | None = None) -> None:
    """Parse the case and run it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("case", choices=["throughput", "worker"])
    parser.add_argument("--backend", choices=["postgres", "sqlite"], required=True)
    parser.add_argument("--url", required=True, help="PostgreSQL URL or SQLite file path")
    parser.add_argument("--namespace", default="bench")
    parser.add_argument("--schema", default="openworkflow")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--pool-size", type=int, default=None, help="PostgreSQL pool size")
    parser.add_argument("--step-style", choices=STEP_STYLES, default="sync")
    args = parser.parse_args(argv)
    if args.case == "throughput":
        print(json.dumps(event_loop.run(throughput(args))), flush=True)
    else:
        event_loop.run(idle_worker(args))


if __name__ == "__main__":
    sys.exit(main())
