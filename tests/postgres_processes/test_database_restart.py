"""PostgreSQL restarts while worker processes execute runs: nothing fails, nothing is lost.

Two worker processes (``app.py``, lease 2 s) execute 20 runs of a workflow
with five ~200 ms steps. While they run, the local cluster is either
restarted (``pg_ctlcluster ... restart -m fast``, which drops every
connection) or stopped for 12 s, longer than the backend's pool waits for a
connection, so calls really fail with ``BackendUnavailableError``. The
workers must log, back off and carry on: every run completes with the right
output, none is marked failed, both processes stay alive, every step body
ran at least once (the ledger), each step completed exactly once in the
engine's records, and the dummy password in the URL never reaches the logs.

So that the fault always lands in the middle of engine writes (a restart is
otherwise mostly absorbed by the pool, which swaps dead connections for new
ones), the test locks the running runs' rows just before it strikes, waits
until each execution's next fenced write (or heartbeat) waits inside the
server, terminates those connections (``pg_terminate_backend``: the same
``AdminShutdown`` error a shutdown gives), releases the lock, and then
restarts or stops the server. Relying on the shutdown alone to cut the
waiting writes is racy: if the lock holder's session ends first, they go
through.

The test needs to control the cluster the URL points at (``pg_lsclusters``
must list it, and we must be allowed to run ``pg_ctlcluster``); otherwise it
is skipped. It restarts the whole server, so do not run it while other
sessions rely on that server.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import re
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from openworkflow import OpenWorkflow
from openworkflow.postgres import PostgresBackend
from tests.fixtures.postgres import require_server_url
from tests.postgres_processes.app import (
    LEDGER_TABLE,
    SLOW_STEP_NAMES,
    SLOW_STEP_SECONDS,
    WorkerProcess,
    create_ledger,
    drop_schema,
    expected_five_slow_steps_output,
    five_slow_steps,
    new_schema_name,
    wait_all_ready,
)

pytestmark = pytest.mark.slow

PROCESSES = 2
CONCURRENCY = 2
RUNS = 20
DUMMY_PASSWORD = "s3cr3t"
DEADLINE_SECONDS = 45.0
OUTAGE_SECONDS = 12.0
LOCAL_HOSTS = {"", "127.0.0.1", "localhost", "::1"}
FAULT_LOG = re.compile(
    r"backing off|paused|Heartbeat .* failed|Could not hand back|handed .* back", re.I
)


# -- controlling the cluster ---------------------------------------------------------------


def _local_cluster(url: str) -> tuple[str, str] | None:
    """(version, name) of the local cluster serving ``url``, or None if we cannot restart it."""
    parts = urlsplit(url)
    if (parts.hostname or "") not in LOCAL_HOSTS:
        return None
    if any(shutil.which(tool) is None for tool in ("pg_ctlcluster", "pg_lsclusters", "pg_isready")):
        return None
    listing = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False, timeout=30
    )
    port = str(parts.port or 5432)
    for line in listing.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[2] == port and fields[3].startswith("online"):
            # pg_ctlcluster needs root or the cluster's owner.
            if os.geteuid() == 0 or fields[4] == getpass.getuser():
                return fields[0], fields[1]
            return None
    return None


def _is_ready(host: str, port: int) -> bool:
    result = subprocess.run(
        ["pg_isready", "-h", host, "-p", str(port)], capture_output=True, check=False, timeout=30
    )
    return result.returncode == 0


def _wait_ready(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not _is_ready(host, port):
        if time.monotonic() > deadline:
            raise AssertionError(f"PostgreSQL at {host}:{port} not ready after {timeout}s")
        time.sleep(0.1)


def _pg_ctlcluster(cluster: tuple[str, str], *action: str) -> None:
    version, name = cluster
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, *action]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited with {result.returncode}: {result.stdout}{result.stderr}"
        )


def _ensure_running(cluster: tuple[str, str], host: str, port: int) -> None:
    """Whatever happened, leave the cluster running and accepting connections."""
    if not _is_ready(host, port):
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, "start"],
            capture_output=True,
            check=False,
            timeout=60,
        )
    _wait_ready(host, port)


# -- reading the database ------------------------------------------------------------------


async def _fetch(url: str, query: sql.Composed | str, params: tuple[Any, ...] = ()) -> list[Any]:
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, connect_timeout=2
    ) as connection:
        cursor = await connection.execute(query, params)
        return await cursor.fetchall()


async def _status_counts(url: str, schema: str, namespace: str) -> dict[str, int]:
    rows = await _fetch(
        url,
        sql.SQL("SELECT status, count(*) FROM {} WHERE namespace_id = %s GROUP BY status").format(
            sql.Identifier(schema, "workflow_runs")
        ),
        (namespace,),
    )
    return {status: count for status, count in rows}


async def _ledger_size(url: str, schema: str) -> int:
    rows = await _fetch(
        url, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, LEDGER_TABLE))
    )
    return int(rows[0][0])


async def _wait_all_finished(
    url: str, schema: str, namespace: str, workers: list[WorkerProcess]
) -> dict[str, int]:
    """Poll until every run finished or one failed; tolerate the database being away."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    counts: dict[str, int] = {}
    while True:
        try:
            counts = await _status_counts(url, schema, namespace)
        except psycopg.OperationalError:
            pass  # still coming back up
        else:
            finished = counts.get("completed", 0) + counts.get("failed", 0)
            if finished >= RUNS or counts.get("failed", 0):
                return counts
        for worker in workers:
            assert worker.is_alive(), f"worker {worker.pid} died:\n{worker.log()[-4000:]}"
        assert time.monotonic() < deadline, f"runs not finished after {DEADLINE_SECONDS}s: {counts}"
        await asyncio.sleep(0.1)


async def _hold_running_runs(
    url: str, schema: str, namespace: str
) -> tuple[psycopg.AsyncConnection[Any], int]:
    """Lock the running runs' rows in an open transaction; return it and how many."""
    connection = await psycopg.AsyncConnection.connect(url, connect_timeout=2)
    cursor = await connection.execute(
        sql.SQL(
            "SELECT id FROM {} WHERE namespace_id = %s AND status = 'running' FOR UPDATE"
        ).format(sql.Identifier(schema, "workflow_runs")),
        (namespace,),
    )
    return connection, len(await cursor.fetchall())


async def _wait_for_blocked_writes(url: str, schema: str, at_least: int) -> list[int]:
    """Wait until ``at_least`` statements on ``schema`` wait for a lock; return their pids."""
    deadline = time.monotonic() + 10
    while True:
        rows = await _fetch(
            url,
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database() AND position(%s in query) > 0",
            (f'"{schema}"',),
        )
        if len(rows) >= at_least:
            return [int(row[0]) for row in rows]
        assert time.monotonic() < deadline, f"only {len(rows)} engine writes blocked"
        await asyncio.sleep(0.02)


async def _cut_off(url: str, pids: list[int]) -> None:
    """Terminate the connections of these blocked writes (their statements fail)."""
    await _fetch(url, "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))


def _url_with_dummy_password(url: str) -> tuple[str, str | None]:
    """The URL with a dummy password if the server accepts it (trust auth), and the secret."""
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    user = parts.username or "postgres"
    host = parts.netloc.rsplit("@", 1)[-1]
    candidate = parts._replace(netloc=f"{user}:{DUMMY_PASSWORD}@{host}").geturl()
    try:
        with psycopg.connect(candidate, connect_timeout=5):
            pass
    except psycopg.OperationalError:
        return url, None  # password auth: we cannot invent one
    return candidate, DUMMY_PASSWORD


# -- the tests -------------------------------------------------------------------------------


def _restart(cluster: tuple[str, str]) -> None:
    _pg_ctlcluster(cluster, "restart", "-m", "fast")


def _long_outage(cluster: tuple[str, str]) -> None:
    _pg_ctlcluster(cluster, "stop", "-m", "fast")
    time.sleep(OUTAGE_SECONDS)
    _pg_ctlcluster(cluster, "start")


async def test_workers_survive_a_database_restart_without_failing_or_losing_runs(
    tmp_path: Path,
) -> None:
    """``pg_ctlcluster restart -m fast``: every connection drops, the server is back in ~1 s."""
    await _survive(tmp_path, "restart", _restart)


async def test_workers_survive_an_outage_longer_than_the_pool_wait(tmp_path: Path) -> None:
    """Stopped for 12 s: backend calls outlast the pool's 10 s wait and raise.

    A quick restart is mostly absorbed by the connection pool (calls wait for
    a new connection); this outage makes calls really fail with
    ``BackendUnavailableError`` in the middle of steps, so the workers' fault
    handling (pause the run, back off, resume after the lease) is exercised.
    """
    await _survive(tmp_path, "outage", _long_outage)


async def _survive(
    tmp_path: Path,
    label: str,
    fault: Callable[[tuple[str, str]], None],
) -> None:
    base_url = require_server_url()
    cluster = _local_cluster(base_url)
    if cluster is None:
        pytest.skip("the PostgreSQL cluster behind the test URL cannot be restarted from here")
    host = urlsplit(base_url).hostname or "127.0.0.1"
    port = urlsplit(base_url).port or 5432
    url, secret = _url_with_dummy_password(base_url)
    schema = new_schema_name()
    namespace = f"{label}-{uuid.uuid4().hex[:8]}"
    client_backend = PostgresBackend(url, namespace_id=namespace, schema=schema, listen=False)
    workers: list[WorkerProcess] = []
    test_started = time.monotonic()
    try:
        await client_backend.open()
        create_ledger(url, schema)
        workers = [
            WorkerProcess(
                tmp_path / f"worker-{index}.log",
                url=url,
                schema=schema,
                namespace=namespace,
                concurrency=CONCURRENCY,
                lease="2s",
            )
            for index in range(PROCESSES)
        ]
        await asyncio.to_thread(wait_all_ready, workers)

        ow = OpenWorkflow(client_backend)
        handles = [await ow.run(five_slow_steps, {"n": n}) for n in range(RUNS)]
        await client_backend.stop()  # the client is not needed across the fault

        # Strike once a few steps have run, while runs are in the middle of executing.
        deadline = time.monotonic() + 30
        while await _ledger_size(url, schema) < 2 * PROCESSES * CONCURRENCY:
            assert time.monotonic() < deadline, "the workers did not start executing"
            await asyncio.sleep(0.02)
        before = await _status_counts(url, schema, namespace)
        assert before.get("completed", 0) < RUNS, before
        started_at = (await _fetch(url, "SELECT pg_postmaster_start_time()"))[0][0]
        # Make engine writes fail mid-pass: lock the running runs, so each execution's
        # next fenced write (or heartbeat) waits inside the server, terminate those
        # connections, release the lock, and then strike.
        holder, locked = await _hold_running_runs(url, schema, namespace)
        try:
            assert locked > 0, f"no run was executing: {before}"
            blocked = await _wait_for_blocked_writes(url, schema, locked)
            await _cut_off(url, blocked)
        finally:
            await holder.close()  # rolls back: the locks go
        fault_began = time.monotonic()
        try:
            await asyncio.to_thread(fault, cluster)
        finally:
            await asyncio.to_thread(_ensure_running, cluster, host, port)
        fault_took = time.monotonic() - fault_began
        restarted_at = (await _fetch(url, "SELECT pg_postmaster_start_time()"))[0][0]
        assert restarted_at > started_at, "PostgreSQL was not restarted"

        counts = await _wait_all_finished(url, schema, namespace, workers)
        run_table = sql.Identifier(schema, "workflow_runs")
        failed = await _fetch(
            url,
            sql.SQL(
                "SELECT id, error FROM {} WHERE namespace_id = %s AND status = 'failed'"
            ).format(run_table),
            (namespace,),
        )
        assert not failed, f"runs failed because of the {label}: {failed}"
        assert counts == {"completed": RUNS}, counts
        recovered_after = time.monotonic() - fault_began

        # -- the processes stayed alive and stop cleanly ------------------------------------
        for worker in workers:
            assert worker.is_alive(), f"worker {worker.pid} died:\n{worker.log()[-4000:]}"
        for worker in workers:
            assert worker.stop() == 0, worker.log()[-4000:]

        # -- runs: completed with the right outputs ----------------------------------------
        rows = await _fetch(
            url,
            sql.SQL(
                "SELECT id, status, attempts, input, output FROM {} WHERE namespace_id = %s"
            ).format(run_table),
            (namespace,),
        )
        by_id = {row[0]: row for row in rows}
        assert sorted(by_id) == sorted(handle.id for handle in handles)
        for handle, n in zip(handles, range(RUNS), strict=True):
            run_id, status, _, stored_input, output = by_id[handle.id]
            assert status == "completed", (run_id, status)
            assert stored_input == {"n": n}
            assert output == expected_five_slow_steps_output(n), (run_id, output)
        reclaimed = sum(1 for row in rows if row[2] > 1)

        # -- the ledger: every step body ran at least once ---------------------------------
        ledger = await _fetch(
            url,
            sql.SQL("SELECT run_id, step_name FROM {}").format(
                sql.Identifier(schema, LEDGER_TABLE)
            ),
        )
        executions = Counter((run_id, step_name) for run_id, step_name in ledger)
        expected_steps = {(handle.id, name) for handle in handles for name in SLOW_STEP_NAMES}
        assert set(executions) == expected_steps
        reruns = sum(count - 1 for count in executions.values())

        # -- step attempts: exactly one completed attempt per (run, step) -------------------
        attempts = await _fetch(
            url,
            sql.SQL(
                "SELECT workflow_run_id, step_name, status FROM {} WHERE namespace_id = %s"
            ).format(sql.Identifier(schema, "step_attempts")),
            (namespace,),
        )
        completed_steps = Counter(
            (run_id, name) for run_id, name, status in attempts if status == "completed"
        )
        assert set(completed_steps) == expected_steps
        assert set(completed_steps.values()) == {1}, {
            key: count for key, count in completed_steps.items() if count != 1
        }
        other_attempts = Counter(status for _, _, status in attempts if status != "completed")

        # -- logs: the password never appears; count what the workers reported --------------
        logs = [worker.log() for worker in workers]
        if secret is not None:
            for worker, log in zip(workers, logs, strict=True):
                assert secret not in log, f"worker {worker.pid} logged the password"
        fault_lines = sum(len(FAULT_LOG.findall(log)) for log in logs)
        assert fault_lines > 0, f"the {label} never reached the workers' fault handling"

        print()
        print(
            f"[database {label}] {RUNS} runs x {len(SLOW_STEP_NAMES)} steps of "
            f"{1000 * SLOW_STEP_SECONDS:.0f} ms on {PROCESSES} processes "
            f"x concurrency {CONCURRENCY}, lease 2s"
        )
        print(
            f"[database {label}] before the {label}: {before}, {locked} runs locked, "
            f"{len(blocked)} engine writes cut off; {label} took "
            f"{fault_took:.2f} s; all runs completed {recovered_after:.2f} s after it began; "
            f"test took {time.monotonic() - test_started:.2f} s"
        )
        print(
            f"[database {label}] step bodies re-run: {reruns}; runs claimed more than once: "
            f"{reclaimed}; non-completed step attempts: {dict(other_attempts)}; "
            f"worker log lines about database faults: {fault_lines}; "
            f"password checked: {secret is not None}"
        )
    finally:
        await asyncio.to_thread(_ensure_running, cluster, host, port)
        for worker in workers:
            worker.kill()
        await client_backend.stop()
        drop_schema(base_url, schema)
