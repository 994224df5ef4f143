"""One parent run waiting on many children: how long the whole fan-out takes.

    .venv/bin/python -m benchmarks.fan_out --backend sqlite|postgres [--children 10000]
        [--reps 3] [--concurrency 100] [--postgres-url URL] [--json]

Each repetition, in a fresh target (a SQLite file in a temporary folder; a
fresh PostgreSQL schema, dropped at the end): one worker in this process
serves :func:`fan_out_parent` and :func:`fan_out_child`; the parent starts
``--children`` children with ``asyncio.gather(step.run_workflow(...) ...)``
(one step attempt each, so its ``max_step_attempts`` is raised to fit) and
returns the sum of their outputs. The wall time runs from ``ow.run`` of the
parent to its result. Also reported: how many passes the parent took, and
the longest and the last one (a pass reads the whole history and replays
every child step; the last one completes every child's attempt).

Printed: the wall time as the median (min-max) over ``--reps``, in seconds.
The PostgreSQL URL comes from ``--postgres-url``, else
``OPENWORKFLOW_TEST_POSTGRES_URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.cases import open_backend
from openworkflow import OpenWorkflow, Step, Worker, workflow
from openworkflow.core.backend import Backend
from openworkflow.worker import execution

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PARENT = "fan-out-parent"
TIMEOUT_S = 1800.0


@workflow(name="fan-out-child")
async def fan_out_child(input: int) -> int:
    """A child that only returns its input doubled (the fan-out's cost, not the child's)."""
    return input * 2


def parent_for(children: int) -> Any:
    """The parent workflow, with room in its history for ``children`` child steps."""

    @workflow(name=PARENT, max_step_attempts=children + 10)
    async def fan_out_parent(input: int, step: Step) -> int:
        outputs = await asyncio.gather(
            *(step.run_workflow(fan_out_child, index) for index in range(input))
        )
        return sum(outputs)

    return fan_out_parent


@dataclass
class PassTimes:
    """The duration of each pass over the parent run, in seconds."""

    seconds: list[float] = field(default_factory=list)


@contextlib.contextmanager
def timing_parent_passes() -> Iterator[PassTimes]:
    """Time every pass over the parent (a wrapper around ``WorkflowExecution.execute``)."""
    times = PassTimes()
    original: Callable[[execution.WorkflowExecution], Awaitable[None]]
    original = execution.WorkflowExecution.execute

    async def timed(self: execution.WorkflowExecution) -> None:
        if self.run.workflow_name != PARENT:
            await original(self)
            return
        started = time.perf_counter()
        try:
            await original(self)
        finally:
            times.seconds.append(time.perf_counter() - started)

    execution.WorkflowExecution.execute = timed  # type: ignore[method-assign]
    try:
        yield times
    finally:
        execution.WorkflowExecution.execute = original  # type: ignore[method-assign]


async def one_fan_out(backend: Backend, children: int, concurrency: int) -> dict[str, Any]:
    """Run one parent with ``children`` children to its end; the figures of that run."""
    parent = parent_for(children)
    ow = OpenWorkflow(backend)
    worker = Worker(backend, [parent, fan_out_child], concurrency=concurrency)
    with timing_parent_passes() as passes:
        await worker.start()
        try:
            started = time.perf_counter()
            handle = await ow.run(parent, children)
            result = await asyncio.wait_for(handle.result(), TIMEOUT_S)
            wall_s = time.perf_counter() - started
        finally:
            await worker.stop()
    expected = children * (children - 1)  # the sum of 2 * i for i < children
    if result != expected:
        raise RuntimeError(f"the parent returned {result!r}, expected {expected}")
    return {
        "wall_s": wall_s,
        "parent_passes": len(passes.seconds),
        "longest_pass_s": max(passes.seconds),
        "last_pass_s": passes.seconds[-1],
    }


@contextlib.asynccontextmanager
async def fresh_backend(kind: str, postgres_url: str) -> AsyncIterator[Backend]:
    """A backend on an empty target: a new SQLite file, or a new PostgreSQL schema."""
    namespace = str(uuid.uuid4())
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            backend = open_backend(kind, str(Path(folder) / "fan_out.db"), namespace, "")
            try:
                yield backend
            finally:
                await backend.stop()
        return
    schema = f"fan_out_{uuid.uuid4().hex[:12]}"
    backend = open_backend(kind, postgres_url, namespace, schema)
    try:
        yield backend
    finally:
        await backend.stop()
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every repetition, then the median and range of the wall time."""
    reps: list[dict[str, Any]] = []
    for _ in range(args.reps):
        async with fresh_backend(args.backend, args.postgres_url) as backend:
            opener = getattr(backend, "open", None)
            if opener is not None:
                await opener()
            reps.append(await one_fan_out(backend, args.children, args.concurrency))
    walls = [rep["wall_s"] for rep in reps]
    return {
        "backend": args.backend,
        "children": args.children,
        "concurrency": args.concurrency,
        "reps": reps,
        "wall_s_median": statistics.median(walls),
        "wall_s_min": min(walls),
        "wall_s_max": max(walls),
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fan_out", description=__doc__)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), required=True)
    parser.add_argument("--children", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=100, help="the worker's slots")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("OPENWORKFLOW_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.children < 1 or args.reps < 1 or args.concurrency < 1:
        parser.error("--children, --reps and --concurrency must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its figures."""
    args = _parse(argv)
    figures = asyncio.run(measure(args))
    if args.json:
        print(json.dumps(figures))
        return
    print(
        f"fan-out {figures['children']:,} children, {args.backend}: "
        f"{figures['wall_s_median']:.2f} s median "
        f"({figures['wall_s_min']:.2f}-{figures['wall_s_max']:.2f}) over {args.reps} reps"
    )
    for index, rep in enumerate(figures["reps"], 1):
        print(
            f"  rep {index}: {rep['wall_s']:.2f} s, {rep['parent_passes']} parent passes, "
            f"longest {rep['longest_pass_s']:.2f} s, last {rep['last_pass_s']:.2f} s"
        )


if __name__ == "__main__":
    main()
