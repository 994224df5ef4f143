"""F2: SIGTERM during long steps, then a second signal, on the real ``ow worker start``.

The tests drive the command line as users do: a project in a temporary
folder (``openworkflow.config.py`` plus ``flows/long.py``), the database
named by ``OPENWORKFLOW_POSTGRES_URL`` / ``OPENWORKFLOW_SCHEMA`` /
``OPENWORKFLOW_NAMESPACE_ID``, and ``ow worker start`` as a subprocess. The
step of ``f2-long`` appends to the ledger table and then sleeps for
``F2_STEP_SECONDS`` (set per worker process), or 1.5 s for ``{"short": true}``.

- First SIGTERM: the worker stops claiming, lets passes that end within
  ``shutdown_timeout`` finish (the short runs complete on it), then releases
  the leases of the rest. A second worker, idle until then, resumes the
  released runs at once: long before their 60 s lease would have expired, and
  with exactly one more claim each.
- A second signal (SIGINT, Ctrl-C) during a long graceful wait stops at once:
  leases are released and the process exits 0 (``Worker stopped``), the
  command's documented success code.
- A sync step (run in a thread) still sleeping when the worker gives up:
  its lease is released and the process exits without waiting for the
  thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.cli.helpers import Background, Finished, clean_env, write
from tests.faults.figures import Figure, report
from tests.faults.ledger import Expected, tally_scenario
from tests.faults.process_app import LedgerRow, Scenario, scenario
from tests.fixtures.postgres import require_server_url
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

LEASE = "60s"
LEASE_S = 60.0
LONG_STEP = """
import asyncio
import functools
import os
import time

import psycopg
from psycopg import sql
from pydantic import BaseModel

from openworkflow import RunInfo, Step, workflow


class Job(BaseModel):
    short: bool = False


def record(run_id: str, event: str) -> None:
    table = sql.Identifier(os.environ["OPENWORKFLOW_SCHEMA"], "fault_ledger")
    with psycopg.connect(os.environ["OPENWORKFLOW_POSTGRES_URL"], autocommit=True) as db:
        db.execute(
            sql.SQL(
                "INSERT INTO {t} (run_id, step_name, event, execution, pid)"
                " SELECT %s, 'work', %s, count(*) + 1, %s FROM {t}"
                " WHERE run_id = %s AND step_name = 'work' AND event = %s"
            ).format(t=table),
            (run_id, event, os.getpid(), run_id, event),
        )


def seconds(short: bool) -> float:
    return 1.5 if short else float(os.environ["F2_STEP_SECONDS"])


async def work(run_id: str, short: bool) -> int:
    await asyncio.to_thread(record, run_id, "start")
    await asyncio.sleep(seconds(short))
    await asyncio.to_thread(record, run_id, "end")
    return os.getpid()


def work_in_thread(run_id: str, short: bool) -> int:
    record(run_id, "start")
    time.sleep(seconds(short))
    record(run_id, "end")
    return os.getpid()


@workflow(name="f2-long")
async def long(input: Job, step: Step, run: RunInfo) -> dict[str, int]:
    pid = await step.run("work", functools.partial(work, run.id, input.short))
    return {"pid": pid}


@workflow(name="f2-long-sync")
async def long_sync(input: Job, step: Step, run: RunInfo) -> dict[str, int]:
    pid = await step.run("work", functools.partial(work_in_thread, run.id, input.short))
    return {"pid": pid}
"""


@pytest.fixture
async def pg(tmp_path: Path) -> AsyncIterator[Scenario]:
    """A fresh schema with the engine's tables and the ledger, dropped afterwards."""
    async with scenario(require_server_url(), tmp_path) as opened:
        yield opened


def _project(folder: Path, *, concurrency: int, shutdown_timeout: str) -> Path:
    project = folder / "project"
    write(
        project / "openworkflow.config.py",
        f"""
        from openworkflow import define_config

        config = define_config(
            dirs=["./flows"],
            worker={{
                "concurrency": {concurrency},
                "lease_duration": "{LEASE}",
                "shutdown_timeout": "{shutdown_timeout}",
            }},
        )
        """,
    )
    write(project / "flows" / "long.py", LONG_STEP)
    return project


def _worker(pg: Scenario, project: Path, step_seconds: float) -> Background:
    env = clean_env(
        OPENWORKFLOW_POSTGRES_URL=pg.url,
        OPENWORKFLOW_SCHEMA=pg.schema,
        OPENWORKFLOW_NAMESPACE_ID=pg.namespace,
        F2_STEP_SECONDS=str(step_seconds),
        COLUMNS="250",
    )
    return Background(project, "worker", "start", env=env)


async def _started(worker: Background) -> None:
    await asyncio.to_thread(worker.wait_for, "Worker started", 60)


@dataclass
class _Workers:
    """The worker under test (600 s steps) and, once started, an idle second one (0.2 s)."""

    pg: Scenario
    project: Path
    first: Background
    second: Background | None = None
    finished: list[Finished] = field(default_factory=list)
    """How the first and then the second ended, once the ``async with`` block is left."""

    async def start_second(self) -> Background:
        """Start the second worker and wait until it runs."""
        self.second = _worker(self.pg, self.project, step_seconds=0.2)
        await _started(self.second)
        return self.second


@contextlib.asynccontextmanager
async def _workers(
    pg: Scenario, *, concurrency: int, shutdown_timeout: str
) -> AsyncIterator[_Workers]:
    """The first worker, started; at the end SIGKILL it if still running, SIGTERM the second."""
    project = _project(pg.folder, concurrency=concurrency, shutdown_timeout=shutdown_timeout)
    workers = _Workers(pg, project, _worker(pg, project, step_seconds=600))
    try:
        await _started(workers.first)
        yield workers
    finally:
        workers.finished.append(workers.first.stop(signal.SIGKILL))
        if workers.second is not None:
            workers.finished.append(workers.second.stop(signal.SIGTERM))


def _assert_clean_exits(finished: list[Finished], stopping: str, released: int) -> None:
    """The first worker logged ``stopping``, released ``released`` leases; both exited 0."""
    first, second = finished
    assert first.returncode == 0, first.stderr
    assert stopping in first.stderr and "Worker stopped" in first.stderr
    assert first.stderr.count("Released the lease of workflow run") == released, first.stderr
    assert "Traceback" not in first.stderr
    assert second.returncode == 0, second.stderr


async def _wait_for_starts(pg: Scenario, run_ids: list[str], pid: int) -> None:
    async def started() -> bool:
        rows = await pg.db.ledger()
        return {row.run_id for row in rows if row.event == "start" and row.pid == pid} >= set(
            run_ids
        )

    await wait_until(
        started, timeout=60, message="the first worker to start every step", interval=0.05
    )


async def _wait_for_exit(worker: Background, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while worker.process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return worker.process.poll()


async def _wait_all_completed(pg: Scenario, run_ids: list[str]) -> None:
    """Wait until every run completed, within half the lease: none waited for its expiry."""

    async def all_completed() -> bool:
        counts = await pg.db.status_counts(run_ids)
        return counts.get("completed", 0) == len(run_ids)

    await wait_until(
        all_completed, timeout=LEASE_S / 2, message="the released runs to complete", interval=0.05
    )


def _starts(rows: list[LedgerRow], run_id: str) -> list[LedgerRow]:
    return [row for row in rows if row.run_id == run_id and row.event == "start"]


async def test_sigterm_finishes_short_passes_and_releases_long_ones(
    pg: Scenario,
) -> None:
    """F2: SIGTERM: passes that end within the shutdown timeout finish, the others release their
    leases.
    """
    async with _workers(pg, concurrency=6, shutdown_timeout="4s") as workers:
        first = workers.first
        long_ids = await pg.start_runs("f2-long", [{"short": False}] * 4)
        short_ids = await pg.start_runs("f2-long", [{"short": True}] * 2)
        await _wait_for_starts(pg, long_ids + short_ids, first.process.pid)
        second = await workers.start_second()

        signalled_at = await pg.db.now()
        first.process.send_signal(signal.SIGTERM)
        code = await _wait_for_exit(first, 60)
        exited_at = await pg.db.now()
        assert code is not None, "the worker did not exit after SIGTERM"
        await _wait_all_completed(pg, long_ids + short_ids)
    _assert_clean_exits(workers.finished, "Shutting down worker", released=4)
    finished = workers.finished[0]
    expected = {run_id: Expected(output={"pid": first.process.pid}) for run_id in short_ids}
    expected |= {run_id: Expected(output={"pid": second.process.pid}) for run_id in long_ids}
    counted = await tally_scenario(pg.db, expected)

    runs = await pg.db.runs()
    ledger = await pg.db.ledger()
    second_pid = second.process.pid
    for run_id in short_ids:  # finished within the shutdown timeout, on the first worker
        run = runs[run_id]
        assert run.output == {"pid": first.process.pid} and run.attempts == 1, run
        assert [row.pid for row in _starts(ledger, run_id)] == [first.process.pid]
    recovery: list[float] = []
    for run_id in long_ids:  # released, then resumed at once by the second worker
        run = runs[run_id]
        assert run.output == {"pid": second_pid}, run
        assert run.attempts == 2, "one claim each: no claim after a lease expiry"
        starts = _starts(ledger, run_id)
        assert [row.pid for row in starts] == [first.process.pid, second_pid]
        recovery.append(starts[1].at - signalled_at)
    # A resumption after lease expiry would start LEASE_S after the first start.
    waited_for_expiry = sum(
        _starts(ledger, run_id)[1].at >= _starts(ledger, run_id)[0].at + LEASE_S
        for run_id in long_ids
    )
    assert waited_for_expiry == 0
    report(
        Figure(
            fault_id="F2",
            title="SIGTERM during long steps (ow worker start, PostgreSQL)",
            runs=6,
            faults=1,
            lost=counted.lost,
            duplicated=counted.duplicated,
            reexecuted_steps=len(long_ids),
            recovery_s=recovery,
            details=(
                f"6 in-flight runs, shutdown_timeout 4 s, lease {LEASE}: exited "
                f"{exited_at - signalled_at:.1f} s after SIGTERM with code {finished.returncode}, "
                f"2 passes finished, {len(long_ids)} leases released, 0 runs waited for lease "
                f"expiry (recovery = SIGTERM -> step restarted on the other worker)"
            ),
        )
    )


async def test_a_second_signal_stops_the_worker_at_once(pg: Scenario) -> None:
    """F2: A second signal during a graceful stop ends the worker at once, leases released."""
    async with _workers(pg, concurrency=3, shutdown_timeout="60s") as workers:
        first = workers.first
        run_ids = await pg.start_runs("f2-long", [{"short": False}] * 3)
        await _wait_for_starts(pg, run_ids, first.process.pid)
        second = await workers.start_second()

        first.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(first.wait_for, "Shutting down worker", 30)
        await asyncio.sleep(1.0)
        # Graceful: still waiting for the steps, and still holding every lease.
        assert first.process.poll() is None
        held = await pg.db.runs()
        assert all(held[run_id].worker_id is not None for run_id in run_ids), held
        ledger = await pg.db.ledger()
        assert all(len(_starts(ledger, run_id)) == 1 for run_id in run_ids)

        signalled_at = await pg.db.now()
        first.process.send_signal(signal.SIGINT)
        code = await _wait_for_exit(first, 30)
        exited_at = await pg.db.now()
        assert code is not None, "the worker did not exit after the second signal"
        await _wait_all_completed(pg, run_ids)
    _assert_clean_exits(workers.finished, "Stopping now", released=3)
    finished = workers.finished[0]
    counted = await tally_scenario(
        pg.db, {run_id: Expected(output={"pid": second.process.pid}) for run_id in run_ids}
    )

    runs = await pg.db.runs()
    ledger = await pg.db.ledger()
    recovery = []
    for run_id in run_ids:
        run = runs[run_id]
        assert run.output == {"pid": second.process.pid} and run.attempts == 2, run
        recovery.append(_starts(ledger, run_id)[1].at - signalled_at)
    report(
        Figure(
            fault_id="F2",
            title="second signal during a graceful stop (ow worker start, PostgreSQL)",
            runs=len(run_ids),
            faults=2,
            lost=counted.lost,
            duplicated=counted.duplicated,
            reexecuted_steps=len(run_ids),
            recovery_s=recovery,
            details=(
                f"SIGTERM then SIGINT with 3 in-flight runs, shutdown_timeout 60 s: exited "
                f"{exited_at - signalled_at:.2f} s after the second signal with code "
                f"{finished.returncode}, 3 leases released, resumed elsewhere "
                f"p50 {statistics.median(recovery):.2f} s after it"
            ),
        )
    )


async def test_a_sync_step_does_not_keep_a_stopping_worker_alive(pg: Scenario) -> None:
    """F2: SIGTERM during a sync step in a thread: the process still exits 0, leases released."""
    async with _workers(pg, concurrency=2, shutdown_timeout="2s") as workers:
        first = workers.first
        run_ids = await pg.start_runs("f2-long-sync", [{"short": False}] * 2)
        await _wait_for_starts(pg, run_ids, first.process.pid)
        first.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(first.wait_for, "Worker stopped", 30)
        # The leases were released: another worker could resume the runs at once.
        runs = await pg.db.runs()
        code = await _wait_for_exit(first, 5)
    # Released, not finished: each run waits for another worker, its step not completed.
    released = Expected(("pending", "running"))
    counted = await tally_scenario(pg.db, dict.fromkeys(run_ids, released))
    held = [run_id for run_id in run_ids if runs[run_id].worker_id is not None]
    report(
        Figure(
            fault_id="F2",
            title="SIGTERM during a sync step (thread), ow worker start",
            runs=len(run_ids),
            faults=1,
            lost=counted.lost + len(held),
            duplicated=counted.duplicated,
            details=f"leases still held {len(held)}, exit code {code}",
        )
    )
    assert held == [], runs
    assert code == 0, "the process is still running after 'Worker stopped'"
    assert counted.lost == 0 and counted.duplicated == 0, counted
