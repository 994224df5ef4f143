"""The PostgreSQL side of the fault suite's worker programs (``pg_app`` and ``process_app``).

In the worker program: :func:`serve` (open the backend and the ledger, run the
worker until SIGTERM or SIGINT with :mod:`tests.support.processes`, close
them), :class:`LedgerPool` (the connection pool behind a ledger table; each
program keeps its own table, insert and pool settings) and
:func:`configure_logging` (their log setup).

In the test process: :func:`new_schema_name`, :func:`create_ledger_table` and
:func:`drop_schema`: a fresh PostgreSQL schema per test, its ledger table, and
its removal.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, LiteralString

import psycopg
import psycopg_pool
from psycopg import sql

from openworkflow import Worker
from openworkflow.postgres import PostgresBackend
from tests.support.processes import run_worker, stop_on_signals

# -- the worker program ----------------------------------------------------------------------


def configure_logging() -> None:
    """Warnings and up on stderr with the process id, ``openworkflow`` from INFO."""
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s pid=%(process)d %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("openworkflow").setLevel(logging.INFO)


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
