"""What every part of the PostgreSQL backend uses: its state, plumbing and row mapping.

Connection problems surface as :class:`~openworkflow.errors.BackendUnavailableError`
with the password removed; the worker backs off and retries. Every timestamp
is the database's ``NOW()``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.types.json import Jsonb

from openworkflow.backend_common import Order, plan_page
from openworkflow.core import clock
from openworkflow.core import json as ow_json
from openworkflow.core.cursor import Page
from openworkflow.core.json import JsonValue
from openworkflow.core.rows import step_attempt_from_row, workflow_run_from_row
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import BackendClosedError, BackendError, BackendUnavailableError
from openworkflow.notifications import ChangeNotifier
from openworkflow.postgres import queries as q
from openworkflow.postgres.connection import Database, PoolKind
from openworkflow.redaction import redact_url, scrub

Row = Sequence[Any]
Connection = psycopg.AsyncConnection[Any]


def load_time(value: datetime) -> datetime:
    """A database timestamp as the clock's UTC time with milliseconds."""
    # In the engine's sessions (UTC, connection.py) astimezone returns the value itself.
    return clock.truncate_ms(value.astimezone(UTC))


def identity(value: Any) -> Any:
    """JSON columns arrive decoded: nothing to load."""
    return value


def to_run(row: Row) -> WorkflowRun:
    """The run a ``workflow_runs`` row holds."""
    return workflow_run_from_row(row, identity, load_time)


def to_step(row: Row) -> StepAttempt:
    """The step attempt a ``step_attempts`` row holds."""
    return step_attempt_from_row(row, identity, load_time)


def jsonb(value: JsonValue) -> Jsonb | None:
    """A JSON value bound as ``jsonb`` (SQL NULL for None)."""
    return None if value is None else Jsonb(value, dumps=ow_json.dumps)


def lock_scope(**fields: str) -> str:
    """The advisory lock key of an idempotency scope."""
    # The original's JSON.stringify of the same object, so both take one lock.
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


def is_item_error(error: Exception) -> bool:
    """A failed batch worth retrying item by item: not the connection or the pool."""
    return not isinstance(error, BackendUnavailableError | BackendClosedError)


def _is_passing_fault(error: psycopg.OperationalError) -> bool:
    """Whether retrying later can help.

    Anything but a program limit (class 54, e.g. an index row too large),
    which the same statement will hit again.
    """
    return not (error.sqlstate or "").startswith("54")


def _fault_kind(error: psycopg.OperationalError) -> str:
    """What a passing fault is, in words (class 53: the server ran short of a resource)."""
    if error.sqlstate == "53100":
        return "PostgreSQL's disk is full (free space on the server; writes resume then)"
    if (error.sqlstate or "").startswith("53"):
        return "PostgreSQL ran out of a resource (memory, disk or connections)"
    return "PostgreSQL connection failed"


class PostgresBase:
    """The state every part shares: the namespace, the pools and the plumbing."""

    stamps_database_time: ClassVar[bool] = True
    """Every time this backend stores or compares is the database's ``NOW()``; workers read
    that clock (:mod:`openworkflow.worker.db_clock`), not their own."""

    _namespace_id: str
    _db: Database
    _q: q.Queries
    _stopped: bool

    @property
    def notifier(self) -> ChangeNotifier:
        """Wake-ups fed by LISTEN/NOTIFY, for workers and result waiters."""
        return self._db.notifier

    def _check_open(self) -> None:
        if self._stopped:
            raise BackendClosedError("the PostgreSQL backend was stopped; create a new one")

    def _params(self, **values: Any) -> dict[str, Any]:
        return {**self._db.base_params, "ns": self._namespace_id, **values}

    def _owned(self, workflow_run_id: str, worker_id: str, **values: Any) -> dict[str, Any]:
        return self._params(run_id=workflow_run_id, worker_id=worker_id, **values)

    @asynccontextmanager
    async def _connection(self, *, kind: PoolKind = "main") -> AsyncIterator[Connection]:
        """A live connection from the main pool, the lease pool or the claim pool."""
        self._check_open()
        pool = await self._db.pool_for(kind)
        try:
            connection = await self._db.live_connection(pool, ping_idle=kind != "lease")
            try:
                yield connection
            finally:
                await pool.putconn(connection)
        except psycopg_pool.PoolTimeout as error:
            raise BackendUnavailableError(
                f"no PostgreSQL connection available from {redact_url(self._db.url)}: "
                f"{scrub(str(error), self._db.url)}"
            ) from None
        except psycopg.OperationalError as error:
            if not _is_passing_fault(error):
                # e.g. "index row size exceeds maximum" (program limit): a bad
                # value, which retrying cannot fix.
                raise BackendError(
                    f"PostgreSQL error: {scrub(str(error).strip(), self._db.url)}"
                ) from error
            # The server restarted or dropped us: discard every broken idle
            # connection now (no per-connection backoff), so the next call works.
            await pool.check()
            raise BackendUnavailableError(
                f"{_fault_kind(error)}: {scrub(str(error).strip(), self._db.url)}"
            ) from error
        except psycopg.Error as error:
            raise BackendError(
                f"PostgreSQL error: {scrub(str(error).strip(), self._db.url)}"
            ) from error

    async def _fetchone(self, query: bytes, params: dict[str, Any]) -> Row | None:
        async with self._connection() as connection:
            cursor = await connection.execute(query, params)
            return await cursor.fetchone()

    async def _fetchall(self, query: bytes | sql.Composed, params: dict[str, Any]) -> list[Row]:
        async with self._connection() as connection:
            cursor = await connection.execute(query, params)
            return await cursor.fetchall()

    async def _read_one(self, query: bytes, params: dict[str, Any]) -> Row | None:
        """A read: retried once on a fresh connection if the pooled one was dead."""
        try:
            return await self._fetchone(query, params)
        except BackendUnavailableError:
            return await self._fetchone(query, params)

    async def _read_all(self, query: bytes | sql.Composed, params: dict[str, Any]) -> list[Row]:
        """A read returning rows: retried once like :meth:`_read_one`."""
        try:
            return await self._fetchall(query, params)
        except BackendUnavailableError:
            return await self._fetchall(query, params)

    @staticmethod
    async def _one(connection: Connection, query: bytes, params: dict[str, Any]) -> Row | None:
        cursor = await connection.execute(query, params)
        return await cursor.fetchone()

    async def _list_page(
        self,
        table: str,
        natural_order: Order,
        conditions: list[str],
        values: dict[str, Any],
        limit: int | None,
        after: str | None,
        before: str | None,
    ) -> Page[Any]:
        plan = plan_page(natural_order, limit, after, before)
        if plan.cursor is not None:
            conditions = [
                *conditions,
                f'("created_at", "id") {plan.cursor_op} (%(c_at)s, %(c_id)s)',
            ]
            values = {**values, "c_at": plan.cursor.created_at, "c_id": plan.cursor.id}
        query = sql.SQL(q.LIST_PAGE).format(
            schema=sql.Identifier(self._db.schema),
            table=sql.Identifier(table),
            where=sql.SQL(" AND ".join(conditions)),
            order=sql.SQL(plan.order),
        )
        rows = await self._read_all(query, {**values, "limit": plan.page_size + 1})
        to_record = to_run if table == "workflow_runs" else to_step
        return plan.page([to_record(row) for row in rows])
