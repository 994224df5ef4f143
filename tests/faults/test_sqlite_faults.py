"""F17: one SQLite file shared by several worker processes and a client process.

Scenario (:func:`test_worker_and_client_processes_share_one_sqlite_file`): the
test creates the database, starts four worker processes (four slots each)
and then one client process that creates 1,000 runs in bursts of 20 while the
workers claim and execute them, reading counts and pages of runs between
bursts. Half of the runs also take a durable 5 ms sleep (park, then be
claimed again). Every step body appends ``run step pid`` to its process's
ledger file, an oracle outside the engine.

It checks that no ``database is locked`` (or any other
``sqlite3.OperationalError``) escapes anywhere: not in any process's output,
not as a failed run; that every run completed once with the right output;
that every step body ran exactly once (the ledger) and has exactly one
completed attempt; and that every process exits with code 0.

A lock held longer than the busy timeout (another connection keeping
``BEGIN IMMEDIATE`` open: a backup, a migration, a long script) is a database
fault like a PostgreSQL restart, and should pause runs, not fail them.
:func:`test_a_lock_held_longer_than_the_busy_timeout_pauses_runs_without_failing_them`
pins that (the busy error reaches the engine as a database fault, so the
pass is handed back, as with a PostgreSQL restart).

This module is also the processes' program::

    python -m tests.faults.test_sqlite_faults worker DB LEDGER_DIR
    python -m tests.faults.test_sqlite_faults client DB RUNS
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from openworkflow import OpenWorkflow, RunInfo, SqliteBackend, Step, Worker, workflow
from tests.faults.figures import Figure, report
from tests.faults.ledger import Expected, tally
from tests.support import processes

pytestmark = pytest.mark.slow

WORKERS = 4
CONCURRENCY = 4
RUNS = 1000
BURST = 20
STEP_NAMES = ("one", "two", "three")
READY_MARKER = "ow-sqlite-ready"
DEADLINE_SECONDS = 90.0
LOCK_ERRORS = ("database is locked", "OperationalError", "SQLITE_BUSY", "Traceback")

# -- the workflow (runs in the worker processes) ---------------------------------------------

_ledger_path: Path | None = None


class Numbered(BaseModel):
    """Input of the workflow."""

    n: int


def _record(run_id: str, step_name: str, value: int) -> int:
    if _ledger_path is None:
        raise RuntimeError("the ledger is only open inside a worker process")
    with _ledger_path.open("a", encoding="utf-8") as ledger:
        ledger.write(f"{run_id} {step_name} {os.getpid()}\n")
    return value


@workflow(name="sqlite-fault-steps")
async def sqlite_steps(input: Numbered, step: Step, run: RunInfo) -> int:
    """``((n + 1) * 2) + 3`` in three ledgered steps; odd ``n`` also sleeps 5 ms durably."""
    one = await step.run("one", lambda: _record(run.id, "one", input.n + 1))
    if input.n % 2:
        await step.sleep("nap", "5ms")
    two = await step.run("two", lambda: _record(run.id, "two", one * 2))
    return int(await step.run("three", lambda: _record(run.id, "three", two + 3)))


def expected_value(n: int) -> int:
    """What :func:`sqlite_steps` returns for input ``n``."""
    return (n + 1) * 2 + 3


# -- the processes -------------------------------------------------------------------------


async def _worker_main(database: str, ledger_dir: str) -> None:
    global _ledger_path
    _ledger_path = Path(ledger_dir) / f"ledger-{os.getpid()}.txt"
    backend = SqliteBackend(database)
    worker = Worker(backend, [sqlite_steps], concurrency=CONCURRENCY, lease_duration="30s")
    stop_requested = processes.stop_on_signals()
    try:
        await processes.run_worker(worker, stop_requested, READY_MARKER)
    finally:
        await backend.stop()


async def _client_main(database: str, runs: int) -> None:
    async with OpenWorkflow(SqliteBackend(database)) as ow:
        for first in range(0, runs, BURST):
            await asyncio.gather(
                *(ow.run(sqlite_steps, {"n": n}) for n in range(first, min(first + BURST, runs)))
            )
            await ow.counts()
            await ow.list_runs(limit=25)
            await asyncio.sleep(0.01)
    print(f"created {runs} runs", flush=True)


def main(argv: list[str] | None = None) -> None:
    """``worker DB LEDGER_DIR`` or ``client DB RUNS``."""
    parser = argparse.ArgumentParser(prog="python -m tests.faults.test_sqlite_faults")
    parser.add_argument("role", choices=["worker", "client"])
    parser.add_argument("database")
    parser.add_argument("argument")
    options = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s pid=%(process)d %(levelname)s %(name)s: %(message)s",
    )
    if options.role == "worker":
        asyncio.run(_worker_main(options.database, options.argument))
    else:
        asyncio.run(_client_main(options.database, int(options.argument)))


# -- the test ------------------------------------------------------------------------------


class _Process(processes.WorkerProcess):
    """A subprocess of this module (``worker ...`` or ``client ...``) logging to a file."""

    module = "tests.faults.test_sqlite_faults"
    ready_marker = READY_MARKER

    def __init__(self, log_path: Path, *arguments: str) -> None:
        super().__init__(log_path, arguments)


def _query(database: Path, query: str) -> list[Any]:
    with contextlib.closing(
        sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    ) as connection:
        return connection.execute(query).fetchall()


def _wait_all_finished(database: Path, processes: list[_Process], client: _Process) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        counts = dict(_query(database, "SELECT status, count(*) FROM workflow_runs GROUP BY 1"))
        finished = sum(counts.get(status, 0) for status in ("completed", "failed", "canceled"))
        if client.process.poll() is not None and finished >= RUNS:
            return
        for process in processes:
            assert process.is_alive(), f"a worker died:\n{process.log()[-4000:]}"
        assert client.process.poll() in (None, 0), f"the client failed:\n{client.log()[-4000:]}"
        assert time.monotonic() < deadline, f"runs not finished in time: {counts}"
        time.sleep(0.1)


async def test_worker_and_client_processes_share_one_sqlite_file(tmp_path: Path) -> None:
    """F17: worker processes and a client process share one SQLite file; every run ends once."""
    database = tmp_path / "shared.db"
    ledger_dir = tmp_path / "ledgers"
    ledger_dir.mkdir()
    await SqliteBackend(str(database)).stop()  # creates and migrates the file
    workers: list[_Process] = []
    client: _Process | None = None
    try:
        workers = [
            _Process(tmp_path / f"worker-{index}.log", "worker", str(database), str(ledger_dir))
            for index in range(WORKERS)
        ]
        await asyncio.to_thread(processes.wait_all_ready, workers, 60)
        started = time.monotonic()
        client = _Process(tmp_path / "client.log", "client", str(database), str(RUNS))
        await asyncio.to_thread(_wait_all_finished, database, workers, client)
        wall = time.monotonic() - started
        assert client.process.wait(10) == 0, client.log()[-4000:]
        codes = [worker.stop() for worker in workers]
        assert codes == [0] * WORKERS, [worker.log()[-2000:] for worker in workers]

        # -- no lock error surfaced anywhere ------------------------------------------------
        logs = {process.log_path.name: process.log() for process in [*workers, client]}
        surfaced = {
            name: [marker for marker in LOCK_ERRORS if marker in text]
            for name, text in logs.items()
        }
        surfaced = {name: found for name, found in surfaced.items() if found}
        assert not surfaced, {name: logs[name][-3000:] for name in surfaced}

        # -- every run completed once, with the right output ---------------------------------
        rows = _query(database, "SELECT id, status, input, output, error FROM workflow_runs")
        assert len(rows) == RUNS
        lost = 0
        for _, status, stored_input, output, error in rows:
            n = json.loads(stored_input)["n"]
            if status != "completed" or output is None or json.loads(output) != expected_value(n):
                lost += 1
                assert error is None or "locked" not in error, error

        # -- the ledger: every step body ran exactly once -------------------------------------
        ledger = [
            line.split()
            for path in ledger_dir.glob("ledger-*.txt")
            for line in path.read_text(encoding="utf-8").splitlines()
        ]
        executions = Counter((run_id, name) for run_id, name, _ in ledger)
        expected_steps = {(row[0], name) for row in rows for name in STEP_NAMES}
        assert set(executions) == expected_steps
        reexecuted = sum(count - 1 for count in executions.values())
        pids = Counter(pid for _, _, pid in ledger)

        # -- step attempts: exactly one completed attempt per step ----------------------------
        attempts = _query(database, "SELECT workflow_run_id, step_name, status FROM step_attempts")
        completed = Counter(
            (run_id, name) for run_id, name, status in attempts if status == "completed"
        )
        duplicated = sum(1 for count in completed.values() if count > 1)
        assert {key for key in completed if key[1] in STEP_NAMES} == expected_steps
        assert {status for _, _, status in attempts} == {"completed"}

        assert lost == 0, f"{lost} runs lost or wrong"
        assert duplicated == 0 and reexecuted == 0, (duplicated, reexecuted)
        report(
            Figure(
                fault_id="F17",
                title="one SQLite file, 4 worker processes and a client process",
                runs=RUNS,
                faults=0,
                lost=lost,
                duplicated=duplicated,
                reexecuted_steps=reexecuted,
                details=(
                    f"{WORKERS} processes x {CONCURRENCY} slots + 1 client creating runs in "
                    f"bursts of {BURST}, {len(attempts)} step attempts, "
                    f"'database is locked' surfaced 0, steps per worker "
                    f"{'/'.join(str(count) for count in sorted(pids.values()))}, "
                    f"{RUNS / wall:.0f} runs/s"
                ),
            )
        )
    finally:
        for process in [*workers, *([client] if client else [])]:
            process.kill()


# -- a defect: a lock held longer than the busy timeout fails runs ---------------------------------


async def _slow_step() -> int:
    await asyncio.sleep(0.2)
    return 1


@workflow(name="sqlite-fault-locked")
async def locked_steps(step: Step) -> int:
    """Two 200 ms steps; returns 2."""
    return int(await step.run("a", _slow_step)) + int(await step.run("b", _slow_step))


async def test_a_lock_held_longer_than_the_busy_timeout_pauses_runs_without_failing_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another connection holds the write lock for 0.6 s, three times the busy timeout.

    Writes in the meantime give up with "database is locked". That is a database
    fault, like a PostgreSQL restart: the pass should end without a transition,
    the run be handed back, and every run complete once the lock is released,
    with nothing logged at ERROR. (Heartbeats are off so that a heartbeat's own
    error log does not count; the lease is short so a crashed pass resumes soon.)
    """
    caplog.set_level(logging.WARNING, logger="openworkflow")
    path = tmp_path / "locked.db"
    backend = SqliteBackend(str(path), busy_timeout_ms=200)
    ow = OpenWorkflow(backend)
    try:
        handles = [await ow.run(locked_steps) for _ in range(4)]
        worker = Worker(
            backend, [locked_steps], concurrency=4, lease_duration="3s", heartbeat_interval="1h"
        )
        async with worker:
            await asyncio.sleep(0.1)  # the runs are executing their first step
            holder = sqlite3.connect(path, isolation_level=None)
            try:
                holder.execute("BEGIN IMMEDIATE")
                await asyncio.sleep(0.6)
                holder.execute("COMMIT")
            finally:
                holder.close()
            results = await asyncio.gather(
                *(handle.result(timeout="30s") for handle in handles), return_exceptions=True
            )
        counted = await tally(backend, {handle.id: Expected(output=2) for handle in handles})
    finally:
        await backend.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    report(
        Figure(
            fault_id="F17",
            title="SQLite write lock held 3x the busy timeout",
            runs=len(handles),
            faults=1,
            lost=counted.lost,
            duplicated=counted.duplicated,
            details=f"lock 0.6 s, busy timeout 200 ms: ERROR lines {len(errors)}",
        )
    )
    assert results == [2, 2, 2, 2], results
    assert not errors, errors
    assert counted.lost == 0 and counted.duplicated == 0, counted


if __name__ == "__main__":
    main()
