"""Python function calls and CPU per run of the benchmark workflow, in-process.

``python -m benchmarks.calls_per_run [--backend sqlite|postgres] [--runs 500]
[--postgres-url URL] [--top N] [--step-style sync|async]``

Enqueues ``runs`` runs of the throughput benchmark's workflow (4 no-op steps),
then a worker at concurrency 100 executes them under cProfile. The call count
per run hardly moves with machine load, unlike throughput on a shared
machine, so it shows whether a change added Python work to the hot path;
``--top`` lists the functions with the most own time. Run it from each of two
checkouts (``git worktree add``) to compare them.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.cases import STEP_STYLES, bench_workflow
from openworkflow import OpenWorkflow, Worker, event_loop
from openworkflow.core.backend import Backend
from openworkflow.postgres import PostgresBackend
from openworkflow.sqlite import SqliteBackend

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _backend(kind: str, postgres_url: str, folder: Path) -> Backend:
    if kind == "sqlite":
        return SqliteBackend(str(folder / "calls.db"))
    return PostgresBackend(postgres_url, f"calls-{uuid.uuid4()}")


async def measure(
    kind: str, runs: int, postgres_url: str, top: int, step_style: str = "sync"
) -> None:
    """Print calls and CPU milliseconds per run (and the ``top`` functions by own time)."""
    bench = bench_workflow(step_style)
    with tempfile.TemporaryDirectory() as folder:
        backend = _backend(kind, postgres_url, Path(folder))
        try:
            ow = OpenWorkflow(backend)
            handles = [await ow.run(bench, None) for _ in range(runs)]
            profiler = cProfile.Profile()
            cpu = time.process_time()
            profiler.enable()
            async with Worker(backend, [bench], concurrency=100):
                for handle in handles:
                    await handle.result(timeout="300s")
            profiler.disable()
            cpu = time.process_time() - cpu
        finally:
            await backend.stop()
    stats = pstats.Stats(profiler)
    print(
        f"{kind}, {step_style} steps: {stats.total_calls / runs:.0f} Python calls per run, "
        f"{1000 * cpu / runs:.2f} ms CPU per run (profiled), {runs} runs"
    )
    if top:
        stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    """Parse the arguments and measure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--top", type=int, default=0, help="list the N costliest functions")
    parser.add_argument("--step-style", choices=STEP_STYLES, default="sync")
    args = parser.parse_args()
    event_loop.run(measure(args.backend, args.runs, args.postgres_url, args.top, args.step_style))


if __name__ == "__main__":
    main()
