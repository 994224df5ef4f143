"""Subprocess plumbing shared by the fault tests' worker programs.

The programs are ``tests.faults.pg_app``, ``tests.faults.process_app`` and
``tests.faults.test_sqlite_faults``; each keeps its own workflows, ledger,
options and ready line, and uses this module for what they have in common.

In the worker process:

- :func:`stop_on_signals` and :func:`run_worker`: run a worker until SIGTERM
  or SIGINT, printing ``<ready marker> pid=N`` once it claims runs, then stop
  it gracefully;
- for the two PostgreSQL programs, :func:`serve` (the same, with the backend
  and the ledger opened around it), :class:`LedgerPool` (the connection pool
  behind a ledger table; each program keeps its own table, insert and pool
  settings) and :func:`configure_logging` (their log setup).

In the test process:

- :func:`new_schema_name`, :func:`create_ledger_table` and :func:`drop_schema`:
  a fresh PostgreSQL schema per test, its ledger table, and its removal;
- :class:`WorkerProcess`: one ``python -m MODULE ARGS...`` subprocess whose
  output goes to a log file, with its ready line, a graceful stop and a kill;
- :func:`wait_all_ready`, :func:`assert_alive` and :func:`stop_all`: the same
  for a group of them;
- :func:`block_until` and :func:`wait_until`: polling with a deadline, from a
  thread or from a coroutine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, LiteralString

import psycopg
import psycopg_pool
from psycopg import sql

from openworkflow import Worker
from openworkflow.postgres import PostgresBackend

ROOT = Path(__file__).resolve().parents[2]

# -- the worker process ----------------------------------------------------------------------


def configure_logging() -> None:
    """Warnings and up on stderr with the process id, ``openworkflow`` from INFO."""
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s pid=%(process)d %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("openworkflow").setLevel(logging.INFO)


def stop_on_signals() -> asyncio.Event:
    """An event that SIGTERM and SIGINT set (in place of their default handling)."""
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    return stop_requested


async def run_worker(worker: Worker, stop_requested: asyncio.Event, ready_marker: str) -> None:
    """Start ``worker``, print ``<ready_marker> pid=N``, stop it once ``stop_requested`` is set."""
    await worker.start()
    print(f"{ready_marker} pid={os.getpid()}", flush=True)
    await stop_requested.wait()
    await worker.stop()


class LedgerPool:
    """Appends rows to a ledger table through a small autocommit connection pool.

    ``insert`` appends one row and returns one integer (which attempt or
    execution the row is); :meth:`append` adds the process id to its
    parameters. The pool (``name``) keeps one connection open, waits
    ``timeout`` s for a free one, and with ``check`` pings each before use.
    """

    def __init__(
        self,
        url: str,
        insert: sql.Composed,
        *,
        max_size: int,
        name: str,
        connect_timeout: int,
        timeout: float,
        open_timeout: float,
        check: bool = False,
    ) -> None:
        self._insert = insert
        self._open_timeout = open_timeout
        self._pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]] = (
            psycopg_pool.AsyncConnectionPool(
                url,
                min_size=1,
                max_size=max_size,
                kwargs={"autocommit": True, "connect_timeout": connect_timeout},
                check=psycopg_pool.AsyncConnectionPool.check_connection if check else None,
                timeout=timeout,
                open=False,
                name=name,
            )
        )

    async def open(self) -> None:
        """Open the pool and wait (``open_timeout`` s at most) for its first connection."""
        await self._pool.open(wait=True, timeout=self._open_timeout)

    async def close(self) -> None:
        """Close the pool."""
        await self._pool.close()

    async def append(self, params: Mapping[str, Any]) -> int:
        """Run the insert with ``params`` and this process's ``pid``; return what it returns."""
        async with self._pool.connection() as connection:
            cursor = await connection.execute(self._insert, {**params, "pid": os.getpid()})
            row = await cursor.fetchone()
        assert row is not None
        return int(row[0])


async def serve(
    backend: PostgresBackend,
    ledger: LedgerPool,
    worker: Worker,
    *,
    ready_marker: str,
    stopped_marker: str,
) -> None:
    """Open ``backend`` and ``ledger``, run ``worker`` until SIGTERM or SIGINT, close them.

    Prints ``<ready_marker> pid=N`` once the worker claims runs and
    ``<stopped_marker> pid=N`` after a graceful stop.
    """
    stop_requested = stop_on_signals()
    try:
        await backend.open()
        await ledger.open()
        await run_worker(worker, stop_requested, ready_marker)
    finally:
        await ledger.close()
        await backend.stop()
    print(f"{stopped_marker} pid={os.getpid()}", flush=True)


# -- the test's schema ----------------------------------------------------------------------------


def new_schema_name(prefix: str) -> str:
    """A fresh schema name for one test: ``<prefix>_`` and 12 hex digits."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def create_ledger_table(
    url: str, schema: str, table: str, columns: LiteralString, key: Sequence[str]
) -> None:
    """Create a ledger table in ``schema`` (which must exist), indexed on ``key``.

    Its columns are ``id``, ``run_id`` and ``step_name``, then ``columns`` (SQL
    column definitions), then ``pid`` and ``recorded_at`` (the database time).
    """
    name = sql.Identifier(schema, table)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            sql.SQL(
                "CREATE TABLE {table} ("
                " id bigserial PRIMARY KEY, run_id text NOT NULL, step_name text NOT NULL,"
                " {columns}, pid integer NOT NULL,"
                " recorded_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            ).format(table=name, columns=sql.SQL(columns))
        )
        connection.execute(
            sql.SQL("CREATE INDEX ON {table} ({key})").format(
                table=name, key=sql.SQL(", ").join(map(sql.Identifier, key))
            )
        )


def drop_schema(url: str, schema: str) -> None:
    """Drop the test schema and everything in it."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as connection:
        connection.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


# -- worker processes (test-process side) --------------------------------------------------------


class WorkerProcess:
    """One ``python -m MODULE ARGS...`` subprocess whose stdout and stderr go to a log file.

    A subclass names its program (:attr:`module`), the line the program prints
    once it claims runs (:attr:`ready_marker`, followed by `` pid=N``), and how
    :meth:`stop` ends it (:attr:`stop_signals`, :attr:`stop_timeout`). The
    process runs from the repository root with it on ``PYTHONPATH``, unbuffered,
    in this process's environment plus ``env``: pass secrets such as URLs with
    passwords there, not in ``args``, where ``ps`` would show them.
    """

    module: ClassVar[str]
    ready_marker: ClassVar[str]
    stop_signals: ClassVar[tuple[int, ...]] = (signal.SIGTERM,)
    stop_timeout: ClassVar[float] = 30.0

    def __init__(
        self, log_path: Path, args: Sequence[str], env: Mapping[str, str] | None = None
    ) -> None:
        self.log_path = log_path
        environment = {
            **os.environ,
            **(env or {}),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module, *args],
                cwd=ROOT,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._ready = False

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def log(self) -> str:
        """Everything the process has written so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def is_alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None

    def is_ready(self) -> bool:
        """Whether the worker has started claiming runs; raises if it died before that."""
        if self._ready:
            return True
        if f"{self.ready_marker} pid={self.pid}" in self.log():
            self._ready = True
            return True
        if not self.is_alive():
            raise AssertionError(
                f"worker {self.pid} exited with {self.process.returncode} before it was ready:\n"
                + self.log()[-4000:]
            )
        return False

    def signal(self, number: int) -> None:
        """Send a signal if the process is still running."""
        if self.is_alive():
            self.process.send_signal(number)

    def stop(self, timeout: float | None = None) -> int:
        """Send :attr:`stop_signals`, wait for a graceful exit; return the exit code.

        After ``timeout`` seconds (default :attr:`stop_timeout`) the process is
        killed and the stop fails.
        """
        timeout = self.stop_timeout if timeout is None else timeout
        for number in self.stop_signals:
            self.signal(number)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"worker {self.pid} did not stop within {timeout}s") from None

    def kill(self) -> None:
        """SIGKILL if still running, and reap the process."""
        if self.is_alive():
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)


def wait_all_ready(workers: Sequence[WorkerProcess], timeout: float) -> None:
    """Block until every worker printed its ready line (raises if one dies or time runs out)."""
    block_until(
        lambda: all(worker.is_ready() for worker in workers),
        timeout,
        f"workers not ready after {timeout}s",
    )


def assert_alive(workers: Iterable[WorkerProcess]) -> None:
    """Fail with the log's tail of the first worker that is no longer running."""
    for worker in workers:
        assert worker.is_alive(), f"worker {worker.pid} died:\n{worker.log()[-4000:]}"


def stop_all(workers: Iterable[WorkerProcess]) -> None:
    """Stop every worker in turn; fail with the log's tail of one that does not exit with 0."""
    for worker in workers:
        assert worker.stop() == 0, worker.log()[-4000:]


# -- waiting ------------------------------------------------------------------------------------


def block_until(
    check: Callable[[], bool], timeout: float, failure: str, interval: float = 0.05
) -> None:
    """Poll ``check`` until it is true; raise ``AssertionError(failure)`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(failure)
        time.sleep(interval)


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
