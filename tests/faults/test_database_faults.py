"""F3: PostgreSQL restarted and connections killed while worker processes execute runs.

Worker processes (``pg_app.py``, lease 2 s) execute runs of a workflow with
five ~200 ms steps; every step body appends to a ledger table (the oracle
outside the engine), and triggers audit every status change of a run and
every step write (``pg_app.install_audit``). Scenarios:

- **Immediate restarts and a terminate storm**
  (:func:`test_immediate_restarts_and_terminated_connections`): up to three
  ``pg_ctlcluster ... restart -m immediate`` (a crash: backends get SIGQUIT,
  crash recovery on start) at random 0.8-1.6 s gaps while a thread keeps
  terminating random connections of the workers' engine
  (``pg_terminate_backend`` on their ``application_name``) every 50-250 ms.
- **An outage longer than the pool's wait**
  (:func:`test_outage_longer_than_the_pool_wait`): ``stop -m immediate``, 12 s
  down, ``start``: backend calls outlast the pool's 10 s wait and really fail
  with ``BackendUnavailableError`` mid-step.

So that the first strike always lands in the middle of engine writes (a
restart is otherwise mostly absorbed by the pool, which swaps dead
connections for new ones), the test first locks the running runs' rows,
waits until each execution's next fenced write (or heartbeat) waits inside
the server, terminates those connections (the ``AdminShutdown`` error a
shutdown gives), releases the lock, and then strikes.

Each scenario checks: every run completed with the right output (none failed,
none lost); both processes stayed alive, logged no critical error and stop
with exit code 0; every step body ran at least once (ledger) and exactly one
attempt per step completed; the audit saw no run reach two terminal states,
no terminal run changed and no step written after its run ended; the faults
reached the workers' fault handling (log lines); the dummy password in the
URL never reached the logs. Recovery is the time from a restart (or stop)
to the first step completed after the server was back.

The baseline (:func:`test_three_worker_processes_claim_every_run_exactly_once`,
reported under F6, no fault) has three processes share 300 runs of a
three-step workflow: each run claimed once, each step body run once, every
process took work.

Two defects the storm brought out are pinned by deterministic tests (both
fixed in the engine since):

- :func:`test_idle_engine_connections_terminated_between_steps_cost_no_reexecution`:
  a connection the server closed while it sat idle in the engine's pool must
  not be handed to the next fenced write (the pool pings connections that sat
  idle), or the pass ends and its in-flight step runs again.
- :func:`test_database_faults_during_a_step_are_not_counted_as_crashes`: the
  running attempts that database faults leave behind (the run is handed back)
  are not crashes; only passes recovering an expired lease count them.

Every test here runs in a throwaway cluster of its own
(:mod:`tests.faults.private_cluster`, created in a few seconds and dropped
at the end), never in the shared server, so restarting it disturbs no other
test and the suite can run in parallel. Without ``pg_createcluster`` (or the right
to use it) they are skipped locally and fail under ``CI``.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from openworkflow import OpenWorkflow, SqliteBackend, Step, Worker, workflow
from openworkflow.core.backend import GetWorkflowRunParams
from openworkflow.errors import BackendUnavailableError
from openworkflow.postgres import PostgresBackend
from tests.faults.figures import Figure, report
from tests.faults.ledger import Expected, tally
from tests.faults.pg_app import (
    FAST_STEP_NAMES,
    LEDGER_TABLE,
    SLOW_STEP_NAMES,
    WorkerProcess,
    audit_violations,
    create_ledger,
    expected_five_slow_steps_output,
    expected_three_steps_value,
    five_slow_steps,
    install_audit,
    new_schema_name,
    three_steps,
    wait_all_ready,
    with_application_name,
)
from tests.faults.pg_ledger import drop_schema
from tests.faults.private_cluster import PrivateCluster
from tests.support.processes import assert_alive, stop_all
from tests.support.proxy import ProxyBackend

pytestmark = pytest.mark.slow

PROCESSES = 2
CONCURRENCY = 2
LEASE = "2s"
RESTART_RUNS = 32
OUTAGE_RUNS = 20
MAX_RESTARTS = 3
OUTAGE_SECONDS = 12.0
DEADLINE_SECONDS = 90.0
DUMMY_PASSWORD = "s3cr3t"
FAULT_LOG = re.compile(
    r"backing off|paused|Heartbeat .* failed|Could not hand back|handed .* back", re.I
)

# -- the private cluster ----------------------------------------------------------------------


# -- reading the database ------------------------------------------------------------------


async def _fetch(url: str, query: sql.Composed | str, params: Any = ()) -> list[Any]:
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, connect_timeout=2
    ) as connection:
        cursor = await connection.execute(query, params)
        return await cursor.fetchall()


def _runs_table(schema: str) -> sql.Identifier:
    return sql.Identifier(schema, "workflow_runs")


async def _status_counts(url: str, schema: str, namespace: str) -> dict[str, int]:
    rows = await _fetch(
        url,
        sql.SQL("SELECT status, count(*) FROM {} WHERE namespace_id = %s GROUP BY status").format(
            _runs_table(schema)
        ),
        (namespace,),
    )
    return {status: count for status, count in rows}


def _unfinished(url: str, schema: str, namespace: str) -> int | None:
    """How many runs are not terminal yet (None when the database does not answer)."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=2) as connection:
            row = connection.execute(
                sql.SQL(
                    "SELECT count(*) FROM {} WHERE namespace_id = %s "
                    "AND status NOT IN ('completed', 'failed', 'canceled')"
                ).format(_runs_table(schema)),
                (namespace,),
            ).fetchone()
    except psycopg.Error:
        return None
    return None if row is None else int(row[0])


async def _ledger_size(url: str, schema: str) -> int:
    rows = await _fetch(
        url, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, LEDGER_TABLE))
    )
    return int(rows[0][0])


async def _wait_all_finished(
    url: str, schema: str, namespace: str, runs: int, workers: list[WorkerProcess]
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
            if finished >= runs or counts.get("failed", 0):
                return counts
        assert_alive(workers)
        assert time.monotonic() < deadline, f"runs not finished after {DEADLINE_SECONDS}s: {counts}"
        await asyncio.sleep(0.1)


# -- striking ------------------------------------------------------------------------------


@dataclass
class FaultLog:
    """What the strike did."""

    seed: int
    restarts: list[tuple[float, float]] = field(default_factory=list)
    """(began, back) wall-clock times of each restart or outage."""
    terminated: int = 0
    """Engine connections terminated with ``pg_terminate_backend``."""
    cut_off: int = 0
    """Of which: engine writes cut off while waiting inside the server."""
    unfinished_at_restart: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """Where the workers' runs live and how their engine connections are named."""

    url: str
    schema: str
    namespace: str
    app_name: str


def _spawn_workers(
    folder: Path, target: Target, processes: int, concurrency: int, lease: str
) -> list[WorkerProcess]:
    """Add the ledger and the audit to the target's schema, then start the worker processes.

    They log to ``folder/worker-<index>.log`` and name their engine connections
    ``target.app_name``; the caller waits until they are ready, and kills them.
    """
    create_ledger(target.url, target.schema)
    install_audit(target.url, target.schema)
    return [
        WorkerProcess(
            folder / f"worker-{index}.log",
            url=target.url,
            schema=target.schema,
            namespace=target.namespace,
            concurrency=concurrency,
            lease=lease,
            app_name=target.app_name,
        )
        for index in range(processes)
    ]


async def _cut_off_engine_writes(target: Target) -> int:
    """Make engine writes fail mid-pass; return how many were cut off.

    Lock the running runs' rows in an open transaction, so each execution's
    next fenced write (or heartbeat) waits inside the server; terminate those
    connections; release the lock. Relying on a shutdown alone to cut the
    waiting writes is racy: if the lock holder's session ends first, they go
    through.
    """
    holder = await psycopg.AsyncConnection.connect(target.url, connect_timeout=2)
    try:
        cursor = await holder.execute(
            sql.SQL(
                "SELECT id FROM {} WHERE namespace_id = %s AND status = 'running' FOR UPDATE"
            ).format(_runs_table(target.schema)),
            (target.namespace,),
        )
        locked = len(await cursor.fetchall())
        assert locked > 0, "no run was executing"
        deadline = time.monotonic() + 10
        while True:
            rows = await _fetch(
                target.url,
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND application_name = %s",
                (target.app_name,),
            )
            if len(rows) >= locked:
                break
            assert time.monotonic() < deadline, f"only {len(rows)} engine writes blocked"
            await asyncio.sleep(0.02)
        pids = [int(row[0]) for row in rows]
        await _fetch(
            target.url, "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,)
        )
        return len(pids)
    finally:
        await holder.close()  # rolls back: the locks go


def _terminate_storm(
    target: Target, rng: random.Random, stop: threading.Event, log: FaultLog
) -> None:
    """Until ``stop``: every 50-250 ms terminate 1-2 random engine connections of the workers."""
    admin_url = with_application_name(target.url, f"{target.app_name}-admin")
    connection: psycopg.Connection[Any] | None = None
    while not stop.wait(rng.uniform(0.05, 0.25)):
        try:
            if connection is None or connection.closed:
                connection = psycopg.connect(admin_url, autocommit=True, connect_timeout=2)
            rows = connection.execute(
                "SELECT pg_terminate_backend(pid) FROM (SELECT pid FROM pg_stat_activity "
                "WHERE application_name = %s AND pid <> pg_backend_pid() "
                "ORDER BY random() LIMIT %s) AS victims",
                (target.app_name, rng.randint(1, 2)),
            ).fetchall()
            log.terminated += sum(1 for (done,) in rows if done)
        except psycopg.Error:
            if connection is not None:
                connection.close()
            connection = None  # the server is restarting: try again later
    if connection is not None:
        connection.close()


def _restarts_and_storm(cluster: PrivateCluster, target: Target, log: FaultLog) -> None:
    """Immediate restarts at random gaps while a terminate storm runs, as long as work is left."""
    rng = random.Random(log.seed)
    stop = threading.Event()
    storm = threading.Thread(
        target=_terminate_storm,
        args=(target, random.Random(rng.random()), stop, log),
        name="terminate-storm",
    )
    storm.start()
    try:
        for _ in range(MAX_RESTARTS):
            time.sleep(rng.uniform(0.8, 1.6))
            unfinished = _unfinished(target.url, target.schema, target.namespace)
            if unfinished == 0:
                break  # no work left to disturb
            log.unfinished_at_restart.append(unfinished or -1)
            began = time.time()
            cluster.restart("immediate")
            log.restarts.append((began, time.time()))
        time.sleep(0.5)
    finally:
        stop.set()
        storm.join()


def _long_outage(cluster: PrivateCluster, target: Target, log: FaultLog) -> None:
    """Stop the server (immediate) for longer than the pool's wait, then start it."""
    log.unfinished_at_restart.append(_unfinished(target.url, target.schema, target.namespace) or -1)
    began = time.time()
    cluster.stop("immediate")
    time.sleep(OUTAGE_SECONDS)
    cluster.start()
    log.restarts.append((began, time.time()))


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


# -- the scenarios -------------------------------------------------------------------------


async def test_immediate_restarts_and_terminated_connections(
    tmp_path: Path, cluster: PrivateCluster
) -> None:
    """Up to 3 ``restart -m immediate`` while engine connections are terminated at random."""
    figure = await _survive(
        tmp_path,
        cluster=cluster,
        label="restarts",
        runs=RESTART_RUNS,
        strike=_restarts_and_storm,
    )
    report(figure)


async def test_outage_longer_than_the_pool_wait(tmp_path: Path, cluster: PrivateCluster) -> None:
    """Stopped (immediate) for 12 s: backend calls outlast the pool's 10 s wait and raise.

    A quick restart is mostly absorbed by the connection pool (calls wait for
    a new connection); this outage makes calls really fail with
    ``BackendUnavailableError`` in the middle of steps, so the workers' fault
    handling (pause the run, back off, resume after the lease) is exercised.
    """
    figure = await _survive(
        tmp_path, label="outage", runs=OUTAGE_RUNS, cluster=cluster, strike=_long_outage
    )
    report(figure)


async def _survive(
    tmp_path: Path,
    *,
    label: str,
    runs: int,
    cluster: PrivateCluster,
    strike: Callable[[PrivateCluster, Target, FaultLog], None],
) -> Figure:
    base_url = cluster.url
    url, secret = _url_with_dummy_password(base_url)
    schema = new_schema_name()
    target = Target(url, schema, f"{label}-{uuid.uuid4().hex[:8]}", f"owf-{schema}")
    log = FaultLog(seed=random.randrange(2**32))
    client_backend = PostgresBackend(
        url, namespace_id=target.namespace, schema=schema, listen=False
    )
    workers: list[WorkerProcess] = []
    try:
        await client_backend.open()
        workers = _spawn_workers(tmp_path, target, PROCESSES, CONCURRENCY, LEASE)
        await asyncio.to_thread(wait_all_ready, workers)

        ow = OpenWorkflow(client_backend)
        handles = [await ow.run(five_slow_steps, {"n": n}) for n in range(runs)]
        await client_backend.stop()  # the client is not needed across the faults

        # Strike once a few steps have run, while runs are in the middle of executing.
        deadline = time.monotonic() + 30
        while await _ledger_size(url, schema) < 2 * PROCESSES * CONCURRENCY:
            assert time.monotonic() < deadline, "the workers did not start executing"
            await asyncio.sleep(0.02)
        started_at = (await _fetch(url, "SELECT pg_postmaster_start_time()"))[0][0]
        log.cut_off = await _cut_off_engine_writes(target)
        try:
            await asyncio.to_thread(strike, cluster, target, log)
        finally:
            await asyncio.to_thread(cluster.ensure_running)
        restarted_at = (await _fetch(url, "SELECT pg_postmaster_start_time()"))[0][0]
        assert restarted_at > started_at, "PostgreSQL was not restarted"
        assert log.restarts, "no restart happened"
        assert log.unfinished_at_restart[0] != 0, "the first restart found no work to disturb"

        counts = await _wait_all_finished(url, schema, target.namespace, runs, workers)
        run_table = _runs_table(schema)
        failed = await _fetch(
            url,
            sql.SQL(
                "SELECT id, error FROM {} WHERE namespace_id = %s AND status = 'failed'"
            ).format(run_table),
            (target.namespace,),
        )
        assert not failed, f"runs failed because of the {label}: {failed}"
        assert counts == {"completed": runs}, counts

        # -- the processes stayed alive and stop cleanly ------------------------------------
        assert_alive(workers)
        stop_all(workers)

        # -- runs: completed with the right outputs ----------------------------------------
        rows = await _fetch(
            url,
            sql.SQL(
                "SELECT id, status, attempts, input, output FROM {} WHERE namespace_id = %s"
            ).format(run_table),
            (target.namespace,),
        )
        by_id = {row[0]: row for row in rows}
        assert sorted(by_id) == sorted(handle.id for handle in handles)
        lost = 0
        for handle, n in zip(handles, range(runs), strict=True):
            _, status, _, stored_input, output = by_id[handle.id]
            if status != "completed" or output != expected_five_slow_steps_output(n):
                lost += 1
            assert stored_input == {"n": n}
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
                "SELECT workflow_run_id, step_name, status, extract(epoch FROM finished_at) "
                "FROM {} WHERE namespace_id = %s"
            ).format(sql.Identifier(schema, "step_attempts")),
            (target.namespace,),
        )
        completed_steps = Counter(
            (run_id, name) for run_id, name, status, _ in attempts if status == "completed"
        )
        assert set(completed_steps) == expected_steps
        duplicated_steps = {key: n for key, n in completed_steps.items() if n != 1}
        other_attempts = Counter(status for _, _, status, _ in attempts if status != "completed")

        # -- the audit: one terminal state per run, nothing after it -----------------------
        violations = audit_violations(url, schema)
        duplicated = len(duplicated_steps) + sum(len(found) for found in violations.values())

        # -- logs: no crash, the faults were handled, the password never appears -------------
        logs = [worker.log() for worker in workers]
        for worker, text in zip(workers, logs, strict=True):
            assert "Critical error" not in text, f"worker {worker.pid}:\n{text[-4000:]}"
            if secret is not None:
                assert secret not in text, f"worker {worker.pid} logged the password"
        fault_lines = sum(len(FAULT_LOG.findall(text)) for text in logs)
        assert fault_lines > 0, f"the {label} never reached the workers' fault handling"

        # -- recovery: from each strike to the first step completed after it ---------------
        finished = sorted(float(at) for _, _, status, at in attempts if status == "completed")
        recovery = [
            next(at for at in finished if at > back) - began
            for began, back in log.restarts
            if any(at > back for at in finished)
        ]

        assert lost == 0, f"{lost} runs lost or with a wrong output"
        assert duplicated == 0, (duplicated_steps, violations)
        strikes = len(log.restarts)
        kind = (
            f"{strikes} immediate restart{'s' if strikes != 1 else ''}"
            if label == "restarts"
            else f"{strikes} outage of {OUTAGE_SECONDS:.0f} s (stop -m immediate)"
        )
        return Figure(
            fault_id="F3",
            title=(
                "PostgreSQL restarted and connections terminated mid-work"
                if label == "restarts"
                else "PostgreSQL down longer than the pool's wait"
            ),
            runs=runs,
            faults=len(log.restarts) + log.terminated + log.cut_off,
            lost=lost,
            duplicated=duplicated,
            reexecuted_steps=reruns,
            recovery_s=recovery,
            details=(
                f"{kind}, {log.terminated + log.cut_off} connections "
                f"terminated ({log.cut_off} mid-write), {PROCESSES} processes x "
                f"{CONCURRENCY} slots, lease {LEASE}, worker crashes 0, failed runs 0, "
                f"runs claimed again {reclaimed}, failed step attempts "
                f"{other_attempts.get('failed', 0)}, fault log lines {fault_lines}, "
                f"seed {log.seed}"
            ),
        )
    finally:
        await asyncio.to_thread(cluster.ensure_running)
        for worker in workers:
            worker.kill()
        await client_backend.stop()
        drop_schema(base_url, schema)


# -- the baseline: no fault ----------------------------------------------------------------

BASELINE_PROCESSES = 3
BASELINE_CONCURRENCY = 4
BASELINE_RUNS = 300


async def test_three_worker_processes_claim_every_run_exactly_once(
    tmp_path: Path, cluster: PrivateCluster
) -> None:
    """Three processes share one schema and namespace: 300 runs, each run and step once."""
    url = cluster.url
    schema = new_schema_name()
    namespace = f"many-{uuid.uuid4().hex[:8]}"
    target = Target(url, schema, namespace, f"owf-{schema}")
    client_backend = PostgresBackend(url, namespace_id=namespace, schema=schema, listen=False)
    workers: list[WorkerProcess] = []
    try:
        await client_backend.open()  # creates the schema and the tables
        workers = _spawn_workers(
            tmp_path, target, BASELINE_PROCESSES, BASELINE_CONCURRENCY, lease="30s"
        )
        await asyncio.to_thread(wait_all_ready, workers)
        pids = {worker.pid for worker in workers}

        ow = OpenWorkflow(client_backend)
        started = time.monotonic()
        handles = []
        for first in range(0, BASELINE_RUNS, 50):
            handles += await asyncio.gather(
                *(
                    ow.run(three_steps, {"n": n})
                    for n in range(first, min(first + 50, BASELINE_RUNS))
                )
            )
        counts = await _wait_all_finished(url, schema, namespace, BASELINE_RUNS, workers)
        wall = time.monotonic() - started
        counted = await tally(client_backend, [handle.id for handle in handles])
        assert counts == {"completed": BASELINE_RUNS}, counts
        assert_alive(workers)

        # -- runs: each completed once, by one claim, with the right output --------------
        rows = await _fetch(
            url,
            sql.SQL(
                "SELECT id, status, attempts, input, output, error FROM {} WHERE namespace_id = %s"
            ).format(_runs_table(schema)),
            (namespace,),
        )
        assert sorted(row[0] for row in rows) == sorted(handle.id for handle in handles)
        by_id = {row[0]: row for row in rows}
        completed_by: Counter[int] = Counter()
        for handle, n in zip(handles, range(BASELINE_RUNS), strict=True):
            run_id, status, attempts, stored_input, output, error = by_id[handle.id]
            assert status == "completed" and error is None, (run_id, status, error)
            assert attempts == 1, f"run {run_id} was claimed {attempts} times"
            assert stored_input == {"n": n}
            if output["n"] != n or output["value"] != expected_three_steps_value(n):
                counted.lost_runs.append(run_id)  # terminal, but with a wrong result
            assert set(output["pids"]) <= pids, output
            completed_by[output["pids"][-1]] += 1

        # -- the ledger: every step body ran exactly once --------------------------------
        ledger = await _fetch(
            url,
            sql.SQL("SELECT run_id, step_name, attempt, pid FROM {}").format(
                sql.Identifier(schema, LEDGER_TABLE)
            ),
        )
        executions = Counter((run_id, step_name) for run_id, step_name, _, _ in ledger)
        expected_steps = {(handle.id, name) for handle in handles for name in FAST_STEP_NAMES}
        assert set(executions) == expected_steps
        repeated = {key: count for key, count in executions.items() if count != 1}
        assert not repeated, f"steps executed more than once: {repeated}"
        assert {attempt for _, _, attempt, _ in ledger} == {1}
        assert {pid for _, _, _, pid in ledger} <= pids

        # -- step attempts: one completed attempt per (run, step), nothing else -----------
        attempts = await _fetch(
            url,
            sql.SQL(
                "SELECT workflow_run_id, step_name, kind, status FROM {} WHERE namespace_id = %s"
            ).format(sql.Identifier(schema, "step_attempts")),
            (namespace,),
        )
        assert len(attempts) == BASELINE_RUNS * len(FAST_STEP_NAMES)
        assert {(run_id, name) for run_id, name, _, _ in attempts} == expected_steps
        assert {(kind, status) for _, _, kind, status in attempts} == {("function", "completed")}
        violations = audit_violations(url, schema)
        assert not any(violations.values()), violations

        # -- the work was spread over the three processes ----------------------------------
        assert set(completed_by) == pids, f"some process claimed no run: {dict(completed_by)}"

        stop_all(workers)
        for worker in workers:
            text = worker.log()
            assert "Traceback" not in text and " ERROR " not in text, text[-4000:]

        shares = "/".join(str(completed_by[worker.pid]) for worker in workers)
        report(
            Figure(
                fault_id="F6",
                title="3 worker processes share one PostgreSQL queue (no fault)",
                runs=BASELINE_RUNS,
                faults=0,
                lost=counted.lost,
                duplicated=counted.duplicated,
                reexecuted_steps=sum(count - 1 for count in executions.values()),
                details=(
                    f"{BASELINE_PROCESSES} processes x {BASELINE_CONCURRENCY} slots, "
                    f"{BASELINE_RUNS * len(FAST_STEP_NAMES)} steps, double claims 0, "
                    f"runs per process {shares}, {BASELINE_RUNS / wall:.0f} runs/s"
                ),
            )
        )
    finally:
        for worker in workers:
            worker.kill()
        await client_backend.stop()
        drop_schema(url, schema)


# -- a defect the terminate storm shows: dead idle connections end passes ----------------------


@dataclass
class _IdleKill:
    """State of :func:`_idle_kill_workflow` for one test (the step runs in-process)."""

    admin_url: str = ""
    app_name: str = ""
    executions: Counter[str] = field(default_factory=Counter)


_idle_kill = _IdleKill()


async def _terminate_idle_engine_connections() -> int:
    """Step ``one``: the first time, terminate every idle engine connection and wait for it."""
    _idle_kill.executions["one"] += 1
    if _idle_kill.executions["one"] > 1:
        return -1
    async with await psycopg.AsyncConnection.connect(
        _idle_kill.admin_url, autocommit=True
    ) as connection:
        cursor = await connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND state = 'idle'",
            (_idle_kill.app_name,),
        )
        pids = [int(row[0]) for row in await cursor.fetchall()]
        await connection.execute(
            "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,)
        )
        while True:
            cursor = await connection.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
            )
            row = await cursor.fetchone()
            if row is not None and row[0] == 0:
                return len(pids)
            await asyncio.sleep(0.005)


async def _second_step() -> str:
    _idle_kill.executions["two"] += 1
    return "two"


@workflow(name="fault-idle-connections-killed")
async def _idle_kill_workflow(step: Step) -> list[Any]:
    """Step one kills the engine's idle connections; step two then writes through the pool."""
    killed = await step.run("one", _terminate_idle_engine_connections)
    return [killed, await step.run("two", _second_step)]


async def test_idle_engine_connections_terminated_between_steps_cost_no_reexecution(
    cluster: PrivateCluster,
) -> None:
    """Idle pool connections killed by the server must be replaced, not used for a write.

    The first step terminates every idle connection of the engine (its own test's
    ``application_name`` only) and waits until they are gone. The next write then
    takes a connection from the pool. With a checked pool (``check=`` in
    psycopg_pool) that write gets a fresh connection and each step runs once;
    without it the write fails on a dead connection, the worker pauses the run,
    and step one runs again.
    """
    base_url = cluster.url
    schema = new_schema_name()
    _idle_kill.app_name = f"owf-{schema}"
    _idle_kill.admin_url = with_application_name(base_url, f"owf-{schema}-admin")
    _idle_kill.executions.clear()
    backend = PostgresBackend(
        with_application_name(base_url, _idle_kill.app_name), schema=schema, connect_timeout=2
    )
    try:
        handle = await OpenWorkflow(backend).run(_idle_kill_workflow)
        async with Worker(backend, [_idle_kill_workflow], lease_duration="2s"):
            output = await handle.result(timeout="60s")
        counted = await tally(backend, [handle.id])
    finally:
        await backend.stop()
        drop_schema(base_url, schema)
    report(
        Figure(
            fault_id="F3",
            title="idle engine connections terminated between two steps (PostgreSQL)",
            runs=1,
            faults=max(int(output[0]), 0),
            lost=counted.lost,
            duplicated=counted.duplicated,
            reexecuted_steps=sum(count - 1 for count in _idle_kill.executions.values()),
            details=(
                f"{output[0]} idle pooled connections killed by pg_terminate_backend; "
                f"step bodies run {dict(_idle_kill.executions)}"
            ),
        )
    )
    assert output[1] == "two"
    assert dict(_idle_kill.executions) == {"one": 1, "two": 1}
    assert counted.lost == 0 and counted.duplicated == 0, counted


# -- a defect the restart storm shows: database faults counted as crashes -----------------------


class _DatabaseGoneAtStepCompletion(ProxyBackend):
    """The first ``failures`` step completions fail as if the connection was terminated."""

    def __init__(self, inner: Any, failures: int) -> None:
        super().__init__(inner)
        self.remaining = failures

    async def complete_step_attempt(self, params: Any) -> Any:
        if self.remaining > 0:
            self.remaining -= 1
            raise BackendUnavailableError(
                "PostgreSQL connection failed: terminating connection due to administrator "
                "command (injected)"
            )
        return await self.inner.complete_step_attempt(params)


async def _step_of_80_ms() -> int:
    await asyncio.sleep(0.08)  # longer than the one-write threshold: a running attempt first
    return 1


@workflow(name="fault-database-gone-mid-step")
async def _mid_step_workflow(step: Step) -> int:
    """One step slow enough to be recorded as running before it completes."""
    return int(await step.run("slow", _step_of_80_ms))


async def test_database_faults_during_a_step_are_not_counted_as_crashes() -> None:
    """Five passes lose the database between a step's running attempt and its completion.

    Each pass ends without a transition and the worker hands the run back (the
    documented fault path: "a database fault is not a workflow failure"). The
    worker never crashed and the step never hung, so the run must complete when
    the database answers again. The F3 storm hits this at random: a run whose
    step was cut off mid-write a few times failed with ``StepCrashLoopError``.
    """
    backend = SqliteBackend(":memory:")
    flaky = _DatabaseGoneAtStepCompletion(backend, failures=5)
    try:
        handle = await OpenWorkflow(backend).run(_mid_step_workflow)
        async with Worker(flaky, [_mid_step_workflow], lease_duration="2s"):
            result = await handle.result(timeout="60s")
        counted = await tally(backend, {handle.id: Expected(output=1)})
        run = await backend.get_workflow_run(GetWorkflowRunParams(workflow_run_id=handle.id))
    finally:
        await backend.stop()
    report(
        Figure(
            fault_id="F3",
            title="database lost at 5 step completions in a row (SQLite, injected)",
            runs=1,
            faults=5 - flaky.remaining,
            lost=counted.lost,
            duplicated=counted.duplicated,
            details=(
                f"run {run.status if run else 'missing'} after {run.attempts if run else 0} "
                "claims, not failed as a crash loop"
            ),
        )
    )
    assert flaky.remaining == 0
    assert result == 1
    assert counted.lost == 0 and counted.duplicated == 0, counted
