"""The worker process of the process-fault tests, and the helpers the tests drive it with.

Run it as ``python -m tests.faults.process_app --schema S [options]``; the
PostgreSQL URL comes from ``OW_FAULT_URL`` (never from argv, where ``ps``
would show a password). Options: ``--namespace``, ``--concurrency``,
``--lease``, ``--shutdown-timeout`` and the two pool sizes (kept small: many
workers share one server whose ``max_connections`` is 100).

Every step body of the workflows below appends a row to the ledger table
``fault_ledger`` in the test's schema before doing anything else: an oracle
outside the engine, written even by a process that is about to be killed,
paused or fenced off. A row says which run and step, which event (``start``,
``end``, ``cancelled``), the how-many-th such event it is (``execution``), the
process id and the database time. The tests compute lost runs, duplicated
completions, re-executed step bodies and recovery times from it and from the
engine's own rows.

The process prints ``ow-fault-ready pid=N`` once it is claiming runs and
stops gracefully on SIGTERM or SIGINT.

The tests drive it through :func:`scenario` (a fresh schema with the ledger, a
client, a :class:`Database` view, and :class:`WorkerProcess` subprocesses);
the signal loop and the subprocess handle come from
:mod:`tests.support.processes`, the PostgreSQL ledger plumbing (shared with
``pg_app``) from :mod:`tests.faults.pg_ledger`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from pydantic import BaseModel

from openworkflow import OpenWorkflow, RunInfo, Step, Worker, workflow
from openworkflow.core.workflow_definition import WorkflowRef
from openworkflow.postgres import PostgresBackend
from tests.faults import pg_ledger
from tests.support import processes

LEDGER_TABLE = "fault_ledger"
READY_MARKER = "ow-fault-ready"
URL_VARIABLE = "OW_FAULT_URL"

# -- the ledger (worker side) ----------------------------------------------------------


class Ledger(pg_ledger.LedgerPool):
    """Appends ``(run_id, step_name, event, execution, pid)`` rows, autocommitted."""

    def __init__(self, url: str, schema: str, max_size: int) -> None:
        table = sql.Identifier(schema, LEDGER_TABLE)
        super().__init__(
            url,
            sql.SQL(
                "INSERT INTO {table} (run_id, step_name, event, execution, pid) "
                "SELECT %(run_id)s, %(step_name)s, %(event)s, count(*) + 1, %(pid)s FROM {table} "
                "WHERE run_id = %(run_id)s AND step_name = %(step_name)s AND event = %(event)s "
                "RETURNING execution"
            ).format(table=table),
            max_size=max_size,
            name="fault-ledger",
            connect_timeout=5,
            timeout=10.0,
            open_timeout=20.0,
        )
        self.loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        """Open the pool and wait for its first connection (and note the event loop)."""
        self.loop = asyncio.get_running_loop()
        await super().open()

    async def record(self, run_id: str, step_name: str, event: str = "start") -> int:
        """Append one row; return how many ``event`` rows the step has now (this one included)."""
        return await self.append({"run_id": run_id, "step_name": step_name, "event": event})

    def record_from_thread(self, run_id: str, step_name: str, event: str = "start") -> int:
        """:meth:`record` from a step running in a worker thread."""
        assert self.loop is not None
        future: Future[int] = asyncio.run_coroutine_threadsafe(
            self.record(run_id, step_name, event), self.loop
        )
        return future.result(timeout=30)


_ledger: Ledger | None = None


def ledger() -> Ledger:
    """The process's ledger (only inside a worker process)."""
    if _ledger is None:
        raise RuntimeError("the ledger is only open inside a worker process")
    return _ledger


# -- the workflows -------------------------------------------------------------------------


class ChainInput(BaseModel):
    """Input of ``fault-chain``: ``steps`` steps, odd ones slow, even ones quick."""

    n: int
    steps: int = 20
    slow_ms: int = 100
    quick_ms: int = 10


def chain_value(n: int, index: int) -> int:
    """What step ``index`` of run ``n`` returns."""
    return n * 1000 + index


async def _ledgered_step(run_id: str, name: str, value: int, milliseconds: int) -> dict[str, Any]:
    execution = await ledger().record(run_id, name)
    await asyncio.sleep(milliseconds / 1000)
    return {"value": value, "pid": os.getpid(), "execution": execution}


@workflow(name="fault-chain")
async def chain(input: ChainInput, step: Step, run: RunInfo) -> dict[str, Any]:
    """``steps`` ledgered steps in a row; returns ``{"n": n, "values": [n*1000 + i, ...]}``."""
    values: list[int] = []
    for index in range(input.steps):
        name = f"s{index}"
        milliseconds = input.slow_ms if index % 2 else input.quick_ms
        result = await step.run(
            name,
            functools.partial(
                _ledgered_step, run.id, name, chain_value(input.n, index), milliseconds
            ),
        )
        values.append(result["value"])
    return {"n": input.n, "values": values}


def expected_chain_output(n: int, steps: int) -> dict[str, Any]:
    """What ``fault-chain`` returns for input ``n``."""
    return {"n": n, "values": [chain_value(n, index) for index in range(steps)]}


class ZombieInput(BaseModel):
    """Input of ``fault-zombie``: step ``b`` lasts ``first_ms`` at first, then ``later_ms``."""

    n: int
    first_ms: int
    later_ms: int


async def _zombie_step(run_id: str, n: int, first_ms: int, later_ms: int) -> dict[str, Any]:
    execution = await ledger().record(run_id, "b")
    try:
        await asyncio.sleep((first_ms if execution == 1 else later_ms) / 1000)
    except asyncio.CancelledError:
        await ledger().record(run_id, "b", "cancelled")
        raise
    await ledger().record(run_id, "b", "end")
    return {"value": n, "pid": os.getpid(), "execution": execution}


@workflow(name="fault-zombie")
async def zombie(input: ZombieInput, step: Step, run: RunInfo) -> dict[str, Any]:
    """A quick step ``a``, then ``b`` (long on its first execution); returns who ran ``b``."""
    a = await step.run("a", functools.partial(_ledgered_step, run.id, "a", input.n, 0))
    b = await step.run(
        "b", functools.partial(_zombie_step, run.id, input.n, input.first_ms, input.later_ms)
    )
    return {"n": input.n, "a_pid": a["pid"], "b_pid": b["pid"], "b_execution": b["execution"]}


class BlockInput(BaseModel):
    """Input of the blocking workflows: how long step ``block`` blocks."""

    n: int
    block_ms: int


def _block_in_thread(run_id: str, block_ms: int) -> dict[str, Any]:
    execution = ledger().record_from_thread(run_id, "block")
    time.sleep(block_ms / 1000)
    ledger().record_from_thread(run_id, "block", "end")
    return {"pid": os.getpid(), "execution": execution}


async def _block_the_loop(run_id: str, block_ms: int) -> dict[str, Any]:
    execution = await ledger().record(run_id, "block")
    if execution == 1:
        time.sleep(block_ms / 1000)  # deliberately blocks the event loop (a user error)
    await ledger().record(run_id, "block", "end")
    return {"pid": os.getpid(), "execution": execution}


@workflow(name="fault-block-thread")
async def block_thread(input: BlockInput, step: Step, run: RunInfo) -> dict[str, Any]:
    """A sync step that sleeps ``block_ms`` (the engine runs it in a thread), then a quick one."""
    block = await step.run("block", functools.partial(_block_in_thread, run.id, input.block_ms))
    after = await step.run("after", functools.partial(_ledgered_step, run.id, "after", 1, 0))
    return {"block": block, "after_pid": after["pid"]}


@workflow(name="fault-block-loop")
async def block_loop(input: BlockInput, step: Step, run: RunInfo) -> dict[str, Any]:
    """An async step that blocks the event loop ``block_ms`` on its first execution."""
    block = await step.run("block", functools.partial(_block_the_loop, run.id, input.block_ms))
    after = await step.run("after", functools.partial(_ledgered_step, run.id, "after", 1, 0))
    return {"block": block, "after_pid": after["pid"]}


class RaceInput(BaseModel):
    """Input of ``fault-race``."""

    n: int
    step_ms: int = 100


@workflow(name="fault-race")
async def race(input: RaceInput, step: Step, run: RunInfo) -> dict[str, Any]:
    """Three ledgered steps separated by two durable sleeps: three claims per run."""
    pids: list[int] = []
    for index, name in enumerate(("a", "b", "c")):
        if index:
            await step.sleep(f"nap-{index}", "100ms")
        result = await step.run(
            name, functools.partial(_ledgered_step, run.id, name, input.n, input.step_ms)
        )
        pids.append(result["pid"])
    return {"n": input.n, "pids": pids}


class PoisonInput(BaseModel):
    """Input of ``fault-poison``: how long its step works before it kills the process."""

    delay_ms: int = 0


async def _crash_the_process(run_id: str, delay_ms: int) -> None:
    await ledger().record(run_id, "boom")
    await asyncio.sleep(delay_ms / 1000)
    os.kill(os.getpid(), signal.SIGKILL)  # like a segfault or the OOM killer
    await asyncio.sleep(60)


@workflow(name="fault-poison")
async def poison(input: PoisonInput, step: Step, run: RunInfo) -> str:
    """A run whose only step kills its worker process, every time."""
    await step.run("boom", functools.partial(_crash_the_process, run.id, input.delay_ms))
    return "unreachable"


WORKFLOWS = [chain, zombie, block_thread, block_loop, race, poison]

# -- the worker process ----------------------------------------------------------------------


def parse_options(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (the URL comes from ``OW_FAULT_URL``)."""
    parser = argparse.ArgumentParser(prog="python -m tests.faults.process_app")
    parser.add_argument("--schema", required=True)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--lease", default="30s")
    parser.add_argument("--shutdown-timeout", default="10s")
    parser.add_argument("--pool-size", type=int, default=4)
    parser.add_argument("--ledger-pool-size", type=int, default=2)
    options = parser.parse_args(argv)
    options.url = os.environ.get(URL_VARIABLE)
    if not options.url:
        parser.error(f"no URL: set {URL_VARIABLE}")
    return options


async def main(options: argparse.Namespace) -> None:
    """Run one worker until SIGTERM or SIGINT, then stop it gracefully."""
    global _ledger
    backend = PostgresBackend(
        options.url,
        namespace_id=options.namespace,
        schema=options.schema,
        max_pool_size=options.pool_size,
        connect_timeout=5.0,
    )
    _ledger = Ledger(options.url, options.schema, max_size=options.ledger_pool_size)
    worker = Worker(
        backend,
        WORKFLOWS,
        concurrency=options.concurrency,
        lease_duration=options.lease,
        shutdown_timeout=options.shutdown_timeout,
    )
    await pg_ledger.serve(
        backend, _ledger, worker, ready_marker=READY_MARKER, stopped_marker="ow-fault-stopped"
    )


# -- helpers for the tests (test-process side) ---------------------------------------------------


def create_ledger(url: str, schema: str) -> None:
    """Create the ledger table in ``schema`` (which must exist)."""
    pg_ledger.create_ledger_table(
        url,
        schema,
        LEDGER_TABLE,
        "event text NOT NULL, execution integer NOT NULL",
        ("run_id", "step_name", "event"),
    )


class WorkerProcess(processes.WorkerProcess):
    """One worker subprocess (this module's ``main``); stdout and stderr go to a log file.

    :meth:`stop` sends SIGCONT before SIGTERM, so that a paused worker stops too.
    """

    module = "tests.faults.process_app"
    ready_marker = READY_MARKER
    stop_signals = (signal.SIGCONT, signal.SIGTERM)
    stop_timeout = 30.0

    def __init__(
        self,
        log_path: Path,
        *,
        url: str,
        schema: str,
        namespace: str,
        concurrency: int,
        lease: str,
        shutdown_timeout: str = "10s",
        pool_size: int = 4,
        ledger_pool_size: int = 2,
    ) -> None:
        super().__init__(
            log_path,
            [
                "--schema",
                schema,
                "--namespace",
                namespace,
                "--concurrency",
                str(concurrency),
                "--lease",
                lease,
                "--shutdown-timeout",
                shutdown_timeout,
                "--pool-size",
                str(pool_size),
                "--ledger-pool-size",
                str(ledger_pool_size),
            ],
            {URL_VARIABLE: url},  # the URL (maybe with a password): never in argv
        )


@dataclass(frozen=True)
class LedgerRow:
    """One ledger row; ``at`` is the database time in epoch seconds."""

    run_id: str
    step_name: str
    event: str
    execution: int
    pid: int
    at: float


@dataclass(frozen=True)
class RunRow:
    """The engine's row of one run, as the tests need it."""

    id: str
    workflow_name: str
    status: str
    input: Any
    output: Any
    error: Any
    attempts: int
    worker_id: str | None
    available_at: float | None
    finished_at: float | None


class Database:
    """The test's view of its schema (engine tables and ledger), with the database clock."""

    def __init__(self, url: str, schema: str, namespace: str) -> None:
        self.url = url
        self.schema = schema
        self.namespace = namespace
        self._connection: psycopg.AsyncConnection[Any] | None = None

    async def open(self) -> None:
        """Connect (autocommit)."""
        self._connection = await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, connect_timeout=10
        )

    async def close(self) -> None:
        """Disconnect."""
        if self._connection is not None:
            await self._connection.close()

    def query(self, text: str) -> sql.Composed:
        """``text`` with ``{runs}``, ``{steps}`` and ``{ledger}`` naming this schema's tables."""
        return sql.SQL(text).format(  # literal templates only
            runs=sql.Identifier(self.schema, "workflow_runs"),
            steps=sql.Identifier(self.schema, "step_attempts"),
            ledger=sql.Identifier(self.schema, LEDGER_TABLE),
        )

    async def rows(
        self, text: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Run a query and return all its rows."""
        assert self._connection is not None
        cursor = await self._connection.execute(self.query(text), params)
        return await cursor.fetchall() if cursor.description else []

    async def now(self) -> float:
        """The database clock (``clock_timestamp()``), in epoch seconds."""
        rows = await self.rows("SELECT extract(epoch FROM clock_timestamp())::float8")
        return float(rows[0][0])

    async def status_counts(self, run_ids: Sequence[str] | None = None) -> dict[str, int]:
        """How many runs of the namespace (or of ``run_ids``) are in each status."""
        rows = await self.rows(
            "SELECT status, count(*) FROM {runs} WHERE namespace_id = %s"
            " AND (%s::text[] IS NULL OR id = ANY(%s::text[])) GROUP BY status",
            (self.namespace, run_ids, run_ids),
        )
        return {status: int(count) for status, count in rows}

    async def runs(self) -> dict[str, RunRow]:
        """Every run of the namespace, by id."""
        rows = await self.rows(
            "SELECT id, workflow_name, status, input, output, error, attempts, worker_id,"
            " extract(epoch FROM available_at)::float8, extract(epoch FROM finished_at)::float8"
            " FROM {runs} WHERE namespace_id = %s",
            (self.namespace,),
        )
        return {row[0]: RunRow(*row) for row in rows}

    async def ledger(self) -> list[LedgerRow]:
        """Every ledger row, oldest first."""
        rows = await self.rows(
            "SELECT run_id, step_name, event, execution, pid,"
            " extract(epoch FROM recorded_at)::float8 FROM {ledger} ORDER BY recorded_at, id"
        )
        return [LedgerRow(*row) for row in rows]

    async def completed_steps(self) -> list[tuple[str, str, Any]]:
        """``(run_id, step_name, output)`` of every completed step attempt."""
        rows = await self.rows(
            "SELECT workflow_run_id, step_name, output FROM {steps}"
            " WHERE namespace_id = %s AND status = 'completed'",
            (self.namespace,),
        )
        return [(row[0], row[1], row[2]) for row in rows]


def duplicated_completions(completed: Sequence[tuple[str, str, Any]]) -> int:
    """Steps completed more than once (the extra completions)."""
    counts = Counter((run_id, step_name) for run_id, step_name, _ in completed)
    return sum(count - 1 for count in counts.values() if count > 1)


def reexecutions(rows: Sequence[LedgerRow]) -> Counter[tuple[str, str]]:
    """How many times each (run, step) body started, minus one, for those that ran again."""
    starts = Counter((row.run_id, row.step_name) for row in rows if row.event == "start")
    return Counter({key: count - 1 for key, count in starts.items() if count > 1})


@dataclass
class Scenario:
    """One test's schema, client, database view and worker processes."""

    url: str
    schema: str
    namespace: str
    folder: Path
    client: OpenWorkflow
    db: Database
    workers: list[WorkerProcess] = field(default_factory=list)

    def spawn(self, *, concurrency: int, lease: str, **options: Any) -> WorkerProcess:
        """Start one more worker process (killed at the end of the scenario if still alive)."""
        worker = WorkerProcess(
            self.folder / f"worker-{len(self.workers)}.log",
            url=self.url,
            schema=self.schema,
            namespace=self.namespace,
            concurrency=concurrency,
            lease=lease,
            **options,
        )
        self.workers.append(worker)
        return worker

    async def wait_ready(self, workers: Sequence[WorkerProcess], timeout: float = 60.0) -> None:
        """Wait until ``workers`` all claim runs."""
        await asyncio.to_thread(processes.wait_all_ready, workers, timeout)

    async def start_runs(self, workflow: WorkflowRef, inputs: Sequence[Any]) -> list[str]:
        """Create one run per input (25 at a time); return their ids in input order."""
        ids: list[str] = []
        for first in range(0, len(inputs), 25):
            handles = await asyncio.gather(
                *(self.client.run(workflow, item) for item in inputs[first : first + 25])
            )
            ids += [handle.id for handle in handles]
        return ids


@contextlib.asynccontextmanager
async def scenario(url: str, folder: Path) -> AsyncIterator[Scenario]:
    """A fresh schema with the engine's tables and the ledger; everything removed afterwards."""
    schema = pg_ledger.new_schema_name("ow_fault")
    namespace = f"faults-{uuid.uuid4().hex[:8]}"
    backend = PostgresBackend(url, namespace_id=namespace, schema=schema, listen=False)
    db = Database(url, schema, namespace)
    opened: Scenario | None = None
    try:
        await backend.open()  # creates the schema and the tables
        create_ledger(url, schema)
        await db.open()
        opened = Scenario(url, schema, namespace, folder, OpenWorkflow(backend), db)
        yield opened
    finally:
        for worker in opened.workers if opened is not None else []:
            worker.signal(signal.SIGCONT)
            worker.kill()
        await db.close()
        await backend.stop()
        pg_ledger.drop_schema(url, schema)


if __name__ == "__main__":
    pg_ledger.configure_logging()
    logging.getLogger("openworkflow.worker").setLevel(logging.DEBUG)
    asyncio.run(main(parse_options()))
