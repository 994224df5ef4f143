"""Three worker processes share one PostgreSQL schema and namespace: 300 runs, each exactly once.

The test process starts the workers (``app.py``), creates 300 runs of a
three-step workflow through the client, and waits for all of them. Every
step body appends to a ledger table, so the test can check, outside the
engine, that no step ran twice and that all three processes took work.
Figures (wall time, runs/s, share per process) are printed; see them with
``pytest -s``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from openworkflow import OpenWorkflow
from openworkflow.postgres import PostgresBackend
from tests.fixtures.postgres import require_server_url
from tests.postgres_processes.app import (
    FAST_STEP_NAMES,
    LEDGER_TABLE,
    WorkerProcess,
    create_ledger,
    drop_schema,
    expected_three_steps_value,
    new_schema_name,
    three_steps,
    wait_all_ready,
)

pytestmark = pytest.mark.slow

PROCESSES = 3
CONCURRENCY = 4
RUNS = 300
DEADLINE_SECONDS = 90.0


async def _status_counts(url: str, schema: str, namespace: str) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
        cursor = await connection.execute(
            sql.SQL(
                "SELECT status, count(*) FROM {} WHERE namespace_id = %s GROUP BY status"
            ).format(sql.Identifier(schema, "workflow_runs")),
            (namespace,),
        )
        return {status: count for status, count in await cursor.fetchall()}


async def _wait_all_finished(
    url: str, schema: str, namespace: str, workers: list[WorkerProcess]
) -> dict[str, int]:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        counts = await _status_counts(url, schema, namespace)
        finished = counts.get("completed", 0) + counts.get("failed", 0)
        if finished >= RUNS or counts.get("failed", 0):
            return counts
        for worker in workers:
            assert worker.is_alive(), f"worker {worker.pid} died:\n{worker.log()[-4000:]}"
        assert time.monotonic() < deadline, f"runs not finished after {DEADLINE_SECONDS}s: {counts}"
        await asyncio.sleep(0.05)


async def _fetch(url: str, query: sql.Composed, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
        cursor = await connection.execute(query, params)
        return await cursor.fetchall()


async def test_three_worker_processes_execute_every_run_and_step_exactly_once(
    tmp_path: Path,
) -> None:
    url = require_server_url()
    schema = new_schema_name()
    namespace = f"many-{uuid.uuid4().hex[:8]}"
    client_backend = PostgresBackend(url, namespace_id=namespace, schema=schema, listen=False)
    workers: list[WorkerProcess] = []
    try:
        await client_backend.open()  # creates the schema and the tables
        create_ledger(url, schema)
        workers = [
            WorkerProcess(
                tmp_path / f"worker-{index}.log",
                url=url,
                schema=schema,
                namespace=namespace,
                concurrency=CONCURRENCY,
                lease="30s",
            )
            for index in range(PROCESSES)
        ]
        await asyncio.to_thread(wait_all_ready, workers)
        pids = {worker.pid for worker in workers}

        ow = OpenWorkflow(client_backend)
        started = time.monotonic()
        handles = []
        for first in range(0, RUNS, 50):
            handles += await asyncio.gather(
                *(ow.run(three_steps, {"n": n}) for n in range(first, min(first + 50, RUNS)))
            )
        created = time.monotonic()
        counts = await _wait_all_finished(url, schema, namespace, workers)
        finished = time.monotonic()
        assert counts == {"completed": RUNS}, counts

        for worker in workers:
            assert worker.is_alive(), f"worker {worker.pid} died:\n{worker.log()[-4000:]}"

        # -- runs: each completed once, by one claim, with the right output --------------
        run_table = sql.Identifier(schema, "workflow_runs")
        rows = await _fetch(
            url,
            sql.SQL(
                "SELECT id, status, attempts, input, output, error FROM {} WHERE namespace_id = %s"
            ).format(run_table),
            (namespace,),
        )
        assert sorted(row[0] for row in rows) == sorted(handle.id for handle in handles)
        by_id = {row[0]: row for row in rows}
        completed_by: Counter[int] = Counter()
        for handle, n in zip(handles, range(RUNS), strict=True):
            run_id, status, attempts, stored_input, output, error = by_id[handle.id]
            assert status == "completed" and error is None, (run_id, status, error)
            assert attempts == 1, f"run {run_id} was claimed {attempts} times"
            assert stored_input == {"n": n}
            assert output["n"] == n and output["value"] == expected_three_steps_value(n), output
            assert set(output["pids"]) <= pids, output
            completed_by[output["pids"][-1]] += 1

        # -- the ledger: every step body ran exactly once --------------------------------
        ledger = await _fetch(
            url,
            sql.SQL("SELECT run_id, step_name, attempt, pid FROM {}").format(
                sql.Identifier(schema, LEDGER_TABLE)
            ),
            (),
        )
        executions = Counter((run_id, step_name) for run_id, step_name, _, _ in ledger)
        expected_steps = {(handle.id, name) for handle in handles for name in FAST_STEP_NAMES}
        assert set(executions) == expected_steps
        repeated = {key: count for key, count in executions.items() if count != 1}
        assert not repeated, f"steps executed more than once: {repeated}"
        assert {attempt for _, _, attempt, _ in ledger} == {1}
        steps_by_pid = Counter(pid for _, _, _, pid in ledger)
        assert set(steps_by_pid) <= pids

        # -- step attempts: one completed attempt per (run, step), nothing else -----------
        attempts = await _fetch(
            url,
            sql.SQL(
                "SELECT workflow_run_id, step_name, kind, status FROM {} WHERE namespace_id = %s"
            ).format(sql.Identifier(schema, "step_attempts")),
            (namespace,),
        )
        assert len(attempts) == RUNS * len(FAST_STEP_NAMES)
        assert {(run_id, name) for run_id, name, _, _ in attempts} == expected_steps
        assert {(kind, status) for _, _, kind, status in attempts} == {("function", "completed")}

        # -- the work was spread over the three processes ----------------------------------
        assert set(completed_by) == pids, f"some process claimed no run: {dict(completed_by)}"
        assert all(completed_by[pid] > 0 for pid in pids)

        for worker in workers:
            assert worker.stop() == 0, worker.log()[-4000:]
        for worker in workers:
            log = worker.log()
            assert "Traceback" not in log and " ERROR " not in log, log[-4000:]

        wall = finished - started
        print()
        print(
            f"[many workers] {RUNS} runs x {len(FAST_STEP_NAMES)} steps on {PROCESSES} processes "
            f"x concurrency {CONCURRENCY} (PostgreSQL, schema {schema})"
        )
        print(
            f"[many workers] wall time {wall:.2f} s (creating the runs: {created - started:.2f} s)"
            f", {RUNS / wall:.1f} runs/s, {RUNS * len(FAST_STEP_NAMES) / wall:.1f} steps/s"
        )
        for index, worker in enumerate(workers):
            share = completed_by[worker.pid]
            print(
                f"[many workers] process {index} (pid {worker.pid}): {share} runs "
                f"({100 * share / RUNS:.1f}%), {steps_by_pid[worker.pid]} step executions"
            )
    finally:
        for worker in workers:
            worker.kill()
        await client_backend.stop()
        drop_schema(url, schema)
