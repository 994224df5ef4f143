"""``PostgresBackend``: many workers on many machines sharing one PostgreSQL.

The tables are the TypeScript original's, in a configurable schema, so Python
and TypeScript workers can share a database. Statements run on a
``psycopg_pool`` pool in autocommit mode; the few multi-statement operations
(idempotent create, failure, finishing a child, signals) run in short
``READ COMMITTED`` transactions. Every timestamp is the database's ``NOW()``.
Connection problems surface as :class:`~openworkflow.errors.BackendUnavailableError`
with the password removed; the worker backs off and retries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import select
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.types.json import Jsonb

from openworkflow.core import clock
from openworkflow.core import json as ow_json
from openworkflow.core.backend import (
    DEFAULT_NAMESPACE_ID,
    RUN_IDEMPOTENCY_PERIOD_MS,
    CancelWorkflowRunParams,
    ClaimWorkflowRunParams,
    ClaimWorkflowRunsParams,
    CompleteStepAttemptParams,
    CompleteWorkflowRunParams,
    CreateCompletedStepAttemptParams,
    CreateStepAttemptParams,
    CreateWorkflowRunParams,
    ExtendWorkflowRunLeaseParams,
    FailStepAttemptParams,
    FailWorkflowRunParams,
    FindWorkflowRunsByIdPrefixParams,
    GetSignalDeliveryParams,
    GetStepAttemptParams,
    GetWorkflowRunParams,
    ListStepAttemptsParams,
    ListWorkflowRunsParams,
    RescheduleWorkflowRunAfterFailedStepAttemptParams,
    RetryWorkflowRunParams,
    SendSignalParams,
    SendSignalResult,
    SetStepAttemptChildWorkflowRunParams,
    SignalDelivery,
    SleepWorkflowRunParams,
    StepAttemptCounts,
    WorkflowRunCounts,
)
from openworkflow.core.closing import closed_step_attempt_error
from openworkflow.core.cursor import DEFAULT_PAGE_SIZE, Page, build_page, decode_list_cursor
from openworkflow.core.database_url import DEFAULT_SCHEMA
from openworkflow.core.id_prefix import check_prefix_limit, check_run_id_prefix, like_pattern
from openworkflow.core.ids import new_id
from openworkflow.core.json import JsonValue, check_name
from openworkflow.core.retry import DEADLINE_EXCEEDED_MESSAGE, compute_failed_workflow_run_update
from openworkflow.core.rows import step_attempt_from_row, workflow_run_from_row
from openworkflow.core.step_attempt import StepAttempt, fold_step_attempt_counts
from openworkflow.core.workflow_run import (
    WorkflowRun,
    fold_status_counts,
    resolve_cancel_conflict,
    resolve_retry_conflict,
)
from openworkflow.errors import (
    BackendClosedError,
    BackendError,
    BackendUnavailableError,
    WriteConflictError,
)
from openworkflow.group_commit import GroupCommit
from openworkflow.notifications import ChangeNotifier
from openworkflow.postgres import lifecycle
from openworkflow.postgres import queries as q
from openworkflow.postgres.listener import NotificationListener, work_payload
from openworkflow.postgres.schema import migrate, validate_schema_name
from openworkflow.postgres.url import URL_EXAMPLE, check_postgres_url
from openworkflow.redaction import redact_url, scrub

logger = logging.getLogger("openworkflow.postgres")

LEASE_POOL_SIZE = 2
"""Connections reserved for lease renewals (heartbeats), beside the main pool."""

IDLE_CHECK_S = 1.0
"""A pooled connection idle longer than this is pinged before it is handed out."""

Row = Sequence[Any]


def _load_time(value: datetime) -> datetime:
    return clock.truncate_ms(value.astimezone(UTC))


def _identity(value: Any) -> Any:
    return value


def _to_run(row: Row) -> WorkflowRun:
    return workflow_run_from_row(row, _identity, _load_time)


def _to_step(row: Row) -> StepAttempt:
    return step_attempt_from_row(row, _identity, _load_time)


def _jsonb(value: JsonValue) -> Jsonb | None:
    return None if value is None else Jsonb(value, dumps=ow_json.dumps)


def _require(row: Row | None, operation: str) -> Row:
    if row is None:
        raise WriteConflictError(f"Failed to {operation}")
    return row


@dataclass(frozen=True, slots=True)
class _StepInsert:
    """One step attempt waiting for its group-commit batch."""

    namespace_id: str
    id: str
    run_id: str
    worker_id: str
    step_name: str
    kind: str
    status: str
    config: Jsonb | None
    context: Jsonb | None
    output: Jsonb | None


@dataclass(frozen=True, slots=True)
class _Completion:
    """One run completion waiting for its group-commit batch."""

    namespace_id: str
    run_id: str
    worker_id: str
    output: Jsonb | None


def _is_passing_fault(error: psycopg.OperationalError) -> bool:
    """Whether retrying later can help.

    Anything but a program limit (class 54, e.g. an index row too large),
    which the same statement will hit again.
    """
    return not (error.sqlstate or "").startswith("54")


def _is_item_error(error: Exception) -> bool:
    """A failed batch worth retrying item by item: not the connection or the pool."""
    return not isinstance(error, BackendUnavailableError | BackendClosedError)


def _has_unread_input(connection: psycopg.AsyncConnection[Any]) -> bool:
    """Whether the server sent something to an idle connection (e.g. a FATAL on termination)."""
    try:
        poller = select.poll()
        poller.register(connection.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _lock_scope(**fields: str) -> str:
    # The original's JSON.stringify of the same object, so both take one lock.
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


class _Database:
    """The pool, the listener and the rendered statements shared by namespaces."""

    def __init__(
        self,
        url: str,
        schema: str,
        *,
        run_migrations: bool,
        max_pool_size: int,
        connect_timeout: float,
        listen: bool,
    ) -> None:
        self.url = check_postgres_url(url)
        self.schema = validate_schema_name(schema)
        if not isinstance(max_pool_size, int) or max_pool_size < 1:
            raise ValueError(f"max_pool_size must be a positive integer, got {max_pool_size!r}")
        self.queries = q.Queries(schema)
        self.notifier = ChangeNotifier()
        self.base_params: dict[str, Any] = {
            "channel": q.NOTIFY_CHANNEL,
            "schema_name": schema,
            "work_payload": work_payload(schema),
        }
        self._run_migrations = run_migrations
        self._max_pool_size = max_pool_size
        self._connect_kwargs: dict[str, Any] = {"connect_timeout": max(1, round(connect_timeout))}
        self._listen = listen
        self._pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._lease_pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = (
            None
        )
        self._returned_at: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        self._listener: NotificationListener | None = None
        self._open_lock: asyncio.Lock | None = None
        self._pool_tasks: list[asyncio.Task[Any]] = []
        self._stopping = asyncio.Event()
        self._guard: asyncio.Task[None] | None = None
        self._shut_down = False
        self._users = 1
        self.closed = False

    async def pool(self) -> psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        if self.closed:
            raise BackendClosedError("the PostgreSQL backend was stopped; create a new one")
        if self._pool is not None:
            return self._pool
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self.closed:
                raise BackendClosedError("the PostgreSQL backend was stopped; create a new one")
            if self._pool is None:
                await self._open()
        if self._pool is None:  # stopped while connecting or migrating
            raise BackendClosedError("the PostgreSQL backend was stopped; create a new one")
        return self._pool

    async def _open(self) -> None:
        # One direct connection first: a wrong URL, a refused connection or a
        # missing permission fails here with one clear message.
        try:
            connection = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, **self._connect_kwargs
            )
        except psycopg.Error as error:
            raise BackendUnavailableError(
                f"PostgreSQL backend failed to connect to {redact_url(self.url)}: "
                f"{scrub(str(error).strip(), self.url)}. Check the connection URL "
                f"(e.g. {URL_EXAMPLE!r}) and that the server is running."
            ) from None
        async with connection:
            if self._run_migrations:
                try:
                    await migrate(connection, self.schema)
                except psycopg.Error as error:
                    raise BackendError(
                        f"PostgreSQL backend could not migrate schema {self.schema!r}: "
                        f"{scrub(str(error).strip(), self.url)}. Grant this user CREATE on the "
                        "database, or migrate as an owner and pass run_migrations=False."
                    ) from None
        if self.closed:
            return
        # Opened lazily (no connection until the first renewal): clients and the
        # dashboard never renew a lease. Each pool is recorded as soon as it
        # opens, so close() finds it whatever happens next.
        self._lease_pool = self._new_pool("openworkflow-leases", LEASE_POOL_SIZE, min_size=0)
        self._pool_tasks += await lifecycle.open_pool(self._lease_pool)
        pool = self._new_pool("openworkflow", self._max_pool_size)
        self._pool_tasks += await lifecycle.open_pool(pool)
        self._pool = pool
        self._guard = asyncio.create_task(self._close_on_loop_shutdown(), name="openworkflow-guard")
        if self._listen:
            self._listener = NotificationListener(
                self.url,
                self._connect_kwargs,
                q.NOTIFY_CHANNEL,
                self.schema,
                self.notifier,
            )
            self._listener.start()

    def _new_pool(
        self, name: str, max_size: int, min_size: int = 1
    ) -> psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        return psycopg_pool.AsyncConnectionPool(
            self.url,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True, **self._connect_kwargs},
            configure=_configure_connection,
            reset=self._note_returned,
            timeout=10.0,
            open=False,
            name=name,
        )

    async def _note_returned(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self._returned_at[connection] = time.monotonic()

    async def live_connection(
        self,
        pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]],
        *,
        ping_idle: bool = True,
    ) -> psycopg.AsyncConnection[Any]:
        """A connection from ``pool``, pinged first if it may have died while idle.

        The server may have closed it meanwhile (a restart, an idle timeout,
        pg_terminate_backend); a fenced write on it would fail and end the
        pass. A connection with unread input (the server's goodbye) or idle
        for a while is pinged; if dead, every broken idle connection is
        dropped and a fresh one taken. One returned moments ago with nothing
        to read is handed out unchecked, so a busy worker pays no extra round
        trip. With ``ping_idle`` off (lease renewals: idle between heartbeats by
        design, and a failed renewal is simply retried at the next one) only
        unread input triggers a ping. (psycopg_pool's own ``check`` backs off
        between failed checks, which stalls for seconds when several pooled
        connections died.)
        """
        connection = await pool.getconn()
        returned = self._returned_at.get(connection)
        recent = returned is not None and time.monotonic() - returned <= IDLE_CHECK_S
        if (recent or not ping_idle) and not _has_unread_input(connection):
            return connection
        try:
            await psycopg_pool.AsyncConnectionPool.check_connection(connection)
        except psycopg.Error:
            await pool.putconn(connection)  # broken: the pool discards it
            await pool.check()
            return await pool.getconn()
        return connection

    async def lease_pool(self) -> psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        """The pool for lease renewals, kept apart from the main pool.

        A busy main pool then cannot starve heartbeats and expire the leases
        of healthy runs.
        """
        await self.pool()
        assert self._lease_pool is not None
        return self._lease_pool

    async def wait_listening(self, timeout: float = 5.0) -> None:
        """Wait until the LISTEN connection is up (tests and latency-sensitive callers)."""
        await self.pool()
        if self._listener is not None:
            await asyncio.wait_for(self._listener.connected.wait(), timeout)

    def share(self) -> _Database:
        self._users += 1
        return self

    async def release(self) -> None:
        """Drop one user; the last one closes the pools, the listener and their tasks.

        An open in progress finishes first (and then finds the backend
        closed), so no pool starts or connects after this returns.
        """
        self._users -= 1
        if self._users > 0 or self.closed:
            return
        self.closed = True
        if self._open_lock is not None:
            async with self._open_lock:
                pass
        await self._shutdown(abandoning=False)
        if self._guard is not None:
            await self._guard

    async def _close_on_loop_shutdown(self) -> None:
        """Wait for :meth:`release`; if cancelled first, close everything anyway.

        Only the event loop's shutdown cancels this task (``asyncio.run``
        cancels every task left when its main coroutine returns, e.g. when a
        program never stopped its backend). The pools' workers survive that
        cancellation if it comes while they connect (see
        :mod:`~openworkflow.postgres.lifecycle`), and the loop would wait for
        them for ever; closing the pools here ends them.
        """
        try:
            await self._stopping.wait()
        except asyncio.CancelledError:
            self.closed = True
            await self._shutdown(abandoning=True)
            raise

    async def _shutdown(self, *, abandoning: bool) -> None:
        if self._shut_down:
            return
        self._shut_down = True
        self._stopping.set()
        grace_s = lifecycle.POOL_CLOSE_TIMEOUT_S if abandoning else 0
        if self._listener is not None:
            await self._listener.stop(grace_s=grace_s)
        tasks, self._pool_tasks = self._pool_tasks, []
        for pool in (self._pool, self._lease_pool):
            if pool is not None:
                await lifecycle.close_pool(pool, abandoning=abandoning)
        # Closed pools have sent their workers a stop; after a loop shutdown's
        # cancellation they may still be finishing a connection attempt.
        await lifecycle.end_tasks(tasks, grace_s=grace_s)


async def _configure_connection(connection: psycopg.AsyncConnection[Any]) -> None:
    # The fences and row locks assume READ COMMITTED whatever the server default.
    await connection.execute(
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED"
    )


class PostgresBackend:
    """Backend storing runs in PostgreSQL, bound to one namespace of one schema.

    The pool opens (and migrations run, under an advisory lock) on first use or
    on ``await backend.open()``.

    Example:
        ``backend = PostgresBackend("postgresql://app:secret@db:5432/app")``

    Args:
        url: A ``postgresql://user:pass@host:port/db`` URL (libpq parameters allowed).
        namespace_id: The namespace every call reads and writes.
        schema: The schema holding the tables (a plain identifier, at most 63 bytes).
        run_migrations: Create or upgrade the tables when opening (the default).
        max_pool_size: Most connections this backend (and its namespaces) opens.
        connect_timeout: Seconds to wait for a new connection.
        listen: Keep a LISTEN connection so idle workers wake within milliseconds.
    """

    def __init__(
        self,
        url: str,
        namespace_id: str = DEFAULT_NAMESPACE_ID,
        schema: str = DEFAULT_SCHEMA,
        *,
        run_migrations: bool = True,
        max_pool_size: int = 10,
        connect_timeout: float = 10.0,
        listen: bool = True,
        _database: _Database | None = None,
    ) -> None:
        if not isinstance(namespace_id, str) or not namespace_id:
            raise ValueError("namespace_id must be a non-empty string")
        check_name(namespace_id, "namespace_id")
        self._namespace_id = namespace_id
        self._db = _database or _Database(
            url,
            schema,
            run_migrations=run_migrations,
            max_pool_size=max_pool_size,
            connect_timeout=connect_timeout,
            listen=listen,
        )
        self._q = self._db.queries
        self._stopped = False
        self._step_inserts: GroupCommit[_StepInsert, StepAttempt] = GroupCommit(
            self._write_step_inserts, split_on=_is_item_error
        )
        self._completions: GroupCommit[_Completion, WorkflowRun | None] = GroupCommit(
            self._write_completions, split_on=_is_item_error
        )

    @property
    def namespace_id(self) -> str:
        """The namespace every call reads and writes."""
        return self._namespace_id

    @property
    def schema(self) -> str:
        """The schema holding the tables."""
        return self._db.schema

    @property
    def url(self) -> str:
        """The connection URL with its password replaced by ``***``."""
        return redact_url(self._db.url)

    @property
    def notifier(self) -> ChangeNotifier:
        """Wake-ups fed by LISTEN/NOTIFY, for workers and result waiters."""
        return self._db.notifier

    def with_namespace(self, namespace_id: str) -> PostgresBackend:
        """Return a backend on the same pool, bound to another namespace."""
        return PostgresBackend(self._db.url, namespace_id=namespace_id, _database=self._db.share())

    async def open(self) -> None:
        """Connect, migrate and start listening now instead of on first use."""
        self._check_open()
        await self._db.wait_listening()

    async def stop(self) -> None:
        """Close this backend; the pool closes when its last namespace stops."""
        if self._stopped:
            return
        self._stopped = True
        await self._db.release()

    # -- plumbing ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._stopped:
            raise BackendClosedError("the PostgreSQL backend was stopped; create a new one")

    def _params(self, **values: Any) -> dict[str, Any]:
        return {**self._db.base_params, "ns": self._namespace_id, **values}

    @asynccontextmanager
    async def _connection(
        self, *, lease: bool = False
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        self._check_open()
        pool = await (self._db.lease_pool() if lease else self._db.pool())
        try:
            connection = await self._db.live_connection(pool, ping_idle=not lease)
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
                f"PostgreSQL connection failed: {scrub(str(error).strip(), self._db.url)}"
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
    async def _one(
        connection: psycopg.AsyncConnection[Any], query: bytes, params: dict[str, Any]
    ) -> Row | None:
        cursor = await connection.execute(query, params)
        return await cursor.fetchone()

    # -- workflow runs -------------------------------------------------------

    async def create_workflow_run(self, params: CreateWorkflowRunParams) -> WorkflowRun:
        """Insert a pending run, or return the one with the same idempotency key (24 h)."""
        values = self._params(
            run_id=new_id(),
            workflow_name=params.workflow_name,
            version=params.version,
            idempotency_key=params.idempotency_key,
            config=_jsonb(params.config if params.config is not None else {}),
            context=_jsonb(params.context),
            input=_jsonb(params.input),
            parent_ns=params.parent_step_attempt_namespace_id,
            parent_id=params.parent_step_attempt_id,
            available_at=params.available_at,
            deadline_at=params.deadline_at,
            period_ms=RUN_IDEMPOTENCY_PERIOD_MS,
        )
        if params.idempotency_key is None:
            return _to_run(
                _require(await self._fetchone(self._q.insert_workflow_run, values), "create run")
            )
        values["scope"] = _lock_scope(
            namespaceId=self._namespace_id,
            workflowName=params.workflow_name,
            idempotencyKey=params.idempotency_key,
        )
        async with self._connection() as connection, connection.transaction():
            await connection.execute(self._q.lock_idempotency_scope, values)
            row = await self._one(connection, self._q.select_run_by_idempotency_key, values)
            if row is None:
                row = await self._one(connection, self._q.insert_workflow_run, values)
        return _to_run(_require(row, "create workflow run"))

    async def get_workflow_run(self, params: GetWorkflowRunParams) -> WorkflowRun | None:
        """Return the run, or None."""
        row = await self._read_one(
            self._q.select_workflow_run, self._params(run_id=params.workflow_run_id)
        )
        return None if row is None else _to_run(row)

    async def list_workflow_runs(self, params: ListWorkflowRunsParams) -> Page[WorkflowRun]:
        """List runs newest first with cursor pagination and optional filters."""
        conditions = ['"namespace_id" = %(ns)s']
        values = self._params(status=params.status, workflow_name=params.workflow_name)
        if params.status:
            conditions.append('"status" = %(status)s')
        if params.workflow_name:
            conditions.append('"workflow_name" = %(workflow_name)s')
        return await self._list_page(
            "workflow_runs", "DESC", conditions, values, params.limit, params.after, params.before
        )

    async def find_workflow_runs_by_id_prefix(
        self, params: FindWorkflowRunsByIdPrefixParams
    ) -> list[WorkflowRun]:
        """Up to ``limit`` runs whose id starts with ``prefix``, in id order (``LIKE 'p%'``)."""
        prefix = check_run_id_prefix(params.prefix)
        values = self._params(pattern=like_pattern(prefix), limit=check_prefix_limit(params.limit))
        rows = await self._read_all(self._q.select_workflow_runs_by_id_prefix, values)
        return [_to_run(row) for row in rows]

    async def count_workflow_runs(self) -> WorkflowRunCounts:
        """Count runs per status in this namespace."""
        rows = await self._read_all(self._q.count_workflow_runs, self._params())
        return WorkflowRunCounts(**fold_status_counts((row[0], row[1]) for row in rows))

    async def count_step_attempts(self) -> StepAttemptCounts:
        """Count step attempts per status in this namespace."""
        rows = await self._read_all(self._q.count_step_attempts, self._params())
        return StepAttemptCounts(**fold_step_attempt_counts((row[0], row[1]) for row in rows))

    async def claim_workflow_run(self, params: ClaimWorkflowRunParams) -> WorkflowRun | None:
        """Expire deadlines and lease the next available run, in one statement."""
        claimed = await self.claim_workflow_runs(
            ClaimWorkflowRunsParams(
                worker_ids=[params.worker_id], lease_duration_ms=params.lease_duration_ms
            )
        )
        return claimed[0] if claimed else None

    async def claim_workflow_runs(self, params: ClaimWorkflowRunsParams) -> list[WorkflowRun]:
        """Expire deadlines and lease up to one run per worker id, in one statement."""
        worker_ids = list(params.worker_ids)
        if not worker_ids:
            return []
        rows = await self._fetchall(
            self._q.claim_workflow_runs,
            self._params(
                worker_ids=worker_ids,
                claim_limit=len(worker_ids),
                lease_ms=params.lease_duration_ms,
                deadline_error=_jsonb({"message": DEADLINE_EXCEEDED_MESSAGE}),
            ),
        )
        # After the run's columns: whether its lease had expired, whether it has
        # step attempts (or NULL), then the claim position (RETURNING order is
        # unspecified).
        return [
            workflow_run_from_row(
                row, _identity, _load_time, has_step_attempts=row[-2], lease_expired=row[-3]
            )
            for row in sorted(rows, key=lambda row: int(row[-1]))
        ]

    async def extend_workflow_run_lease(self, params: ExtendWorkflowRunLeaseParams) -> WorkflowRun:
        """Fenced: move the lease of an owned running run to now + lease."""
        values = self._owned(
            params.workflow_run_id, params.worker_id, lease_ms=params.lease_duration_ms
        )
        async with self._connection(lease=True) as connection:
            row = await self._one(connection, self._q.extend_lease, values)
        return _to_run(_require(row, "extend lease for workflow run"))

    async def sleep_workflow_run(self, params: SleepWorkflowRunParams) -> WorkflowRun:
        """Fenced: park the run until ``available_at`` (or now if a wait is already answered)."""
        values = self._owned(
            params.workflow_run_id,
            params.worker_id,
            available_at=params.available_at,
            step_ids=list(params.abandoned_step_attempt_ids),
        )
        async with self._connection() as connection:
            if params.abandoned_step_attempt_ids:
                await connection.execute(self._q.delete_abandoned_step_attempts, values)
            parked = _require(
                await self._one(connection, self._q.sleep_workflow_run, values),
                "sleep workflow run",
            )
            # A separate statement, so it sees answers committed while we parked.
            reconciled = await self._one(connection, self._q.reconcile_parked_run, values)
        return _to_run(reconciled or parked)

    async def complete_workflow_run(self, params: CompleteWorkflowRunParams) -> WorkflowRun:
        """Fenced: mark the run completed and wake its parent.

        Runs without a parent are group-committed with other completions; a
        child run (or a refused one) goes through the single-run transaction.
        """
        self._check_open()
        completed = await self._completions.submit(
            _Completion(
                namespace_id=self._namespace_id,
                run_id=params.workflow_run_id,
                worker_id=params.worker_id,
                output=_jsonb(params.output),
            )
        )
        return completed or await self._complete_workflow_run_alone(params)

    async def _write_completions(
        self, items: Sequence[_Completion]
    ) -> list[WorkflowRun | BaseException | None]:
        rows = await self._fetchall(
            self._q.complete_workflow_runs_without_parent,
            self._params(
                namespace_ids=[item.namespace_id for item in items],
                run_ids=[item.run_id for item in items],
                worker_ids=[item.worker_id for item in items],
                outputs=[item.output for item in items],
                closed_error=_jsonb(closed_step_attempt_error("completed")),
            ),
        )
        completed = {(run.namespace_id, run.id): run for run in map(_to_run, rows)}
        return [completed.get((item.namespace_id, item.run_id)) for item in items]

    async def _complete_workflow_run_alone(self, params: CompleteWorkflowRunParams) -> WorkflowRun:
        values = self._owned(params.workflow_run_id, params.worker_id, output=_jsonb(params.output))
        async with self._connection() as connection, connection.transaction():
            row = _require(
                await self._one(connection, self._q.complete_workflow_run, values),
                "mark workflow run completed",
            )
            run = _to_run(row)
            await self._close_open_step_attempts(connection, run)
            await self._wake_parent(connection, run)
        return run

    async def fail_workflow_run(self, params: FailWorkflowRunParams) -> WorkflowRun:
        """Fenced: apply the retry decision at database time; failing for good wakes the parent."""
        values = self._owned(params.workflow_run_id, params.worker_id)
        async with self._connection() as connection, connection.transaction():
            current = _require(
                await self._one(connection, self._q.select_owned_run_for_failure, values),
                "mark workflow run failed",
            )
            db_now, row_attempts, row_deadline = current
            attempts, deadline_at = params.attempts, params.deadline_at
            if attempts is None:
                attempts, deadline_at = row_attempts, row_deadline
            update = compute_failed_workflow_run_update(
                params.retry_policy, attempts, deadline_at, params.error, _load_time(db_now)
            )
            values.update(
                status=update.status,
                available_at=update.available_at,
                finished_at=update.finished_at,
                error=_jsonb(update.error),
            )
            run = _to_run(
                _require(
                    await self._one(connection, self._q.fail_workflow_run, values),
                    "mark workflow run failed",
                )
            )
            if run.status == "failed":
                await self._close_open_step_attempts(connection, run)
                await self._wake_parent(connection, run)
        return run

    async def reschedule_workflow_run_after_failed_step_attempt(
        self, params: RescheduleWorkflowRunAfterFailedStepAttemptParams
    ) -> WorkflowRun:
        """Fenced: send the run back to pending until ``available_at``."""
        row = await self._fetchone(
            self._q.reschedule_after_failed_step,
            self._owned(
                params.workflow_run_id,
                params.worker_id,
                available_at=params.available_at,
                error=_jsonb(params.error),
            ),
        )
        return _to_run(_require(row, "reschedule workflow run after failed step attempt"))

    async def cancel_workflow_run(self, params: CancelWorkflowRunParams) -> WorkflowRun:
        """Cancel an active run (idempotently) and wake its parent."""
        values = self._params(run_id=params.workflow_run_id)
        async with self._connection() as connection, connection.transaction():
            row = await self._one(connection, self._q.cancel_workflow_run, values)
            canceled = None if row is None else _to_run(row)
            if canceled is not None:
                await self._close_open_step_attempts(connection, canceled)
                await self._wake_parent(connection, canceled)
        if canceled is not None:
            return canceled
        existing = await self.get_workflow_run(
            GetWorkflowRunParams(workflow_run_id=params.workflow_run_id)
        )
        return resolve_cancel_conflict(params.workflow_run_id, existing)

    async def retry_workflow_run(self, params: RetryWorkflowRunParams) -> WorkflowRun:
        """Put a failed or canceled run back to pending; failed steps will run again."""
        values = self._params(run_id=params.workflow_run_id)
        async with self._connection() as connection, connection.transaction():
            row = await self._one(connection, self._q.retry_workflow_run, values)
            if row is not None:
                await connection.execute(self._q.delete_attempts_to_rerun, values)
        if row is not None:
            return _to_run(row)
        existing = await self.get_workflow_run(
            GetWorkflowRunParams(workflow_run_id=params.workflow_run_id)
        )
        return resolve_retry_conflict(params.workflow_run_id, existing)

    async def _close_open_step_attempts(
        self, connection: psycopg.AsyncConnection[Any], run: WorkflowRun
    ) -> None:
        """Fail the finished ``run``'s running attempts, in the caller's transaction."""
        await connection.execute(
            self._q.close_open_step_attempts,
            self._params(run_id=run.id, closed_error=_jsonb(closed_step_attempt_error(run.status))),
        )

    async def _wake_parent(
        self, connection: psycopg.AsyncConnection[Any], child: WorkflowRun
    ) -> None:
        if child.parent_step_attempt_namespace_id is None or child.parent_step_attempt_id is None:
            return
        parent_ns = child.parent_step_attempt_namespace_id
        values = self._params(
            parent_ns=parent_ns,
            parent_step_id=child.parent_step_attempt_id,
            child_ns=child.namespace_id,
            child_id=child.id,
        )
        parent = await self._one(connection, self._q.select_waiting_parent_for_update, values)
        if parent is not None:
            await connection.execute(
                self._q.wake_parked_runs, {**values, "ns": parent_ns, "run_ids": [parent[0]]}
            )

    # -- step attempts -------------------------------------------------------

    async def create_step_attempt(self, params: CreateStepAttemptParams) -> StepAttempt:
        """Fenced: insert a running step attempt for an owned run."""
        return await self._insert_step(params, "running", None)

    async def create_completed_step_attempt(
        self, params: CreateCompletedStepAttemptParams
    ) -> StepAttempt:
        """Fenced: insert a completed step attempt (with its output) for an owned run."""
        return await self._insert_step(params, "completed", _jsonb(params.output))

    async def _insert_step(
        self,
        params: CreateStepAttemptParams | CreateCompletedStepAttemptParams,
        status: str,
        output: Jsonb | None,
    ) -> StepAttempt:
        self._check_open()
        return await self._step_inserts.submit(
            _StepInsert(
                namespace_id=self._namespace_id,
                id=new_id(),
                run_id=params.workflow_run_id,
                worker_id=params.worker_id,
                step_name=params.step_name,
                kind=params.kind,
                status=status,
                config=_jsonb(params.config if params.config is not None else {}),
                context=_jsonb(params.context),
                output=output,
            )
        )

    async def _write_step_inserts(
        self, items: Sequence[_StepInsert]
    ) -> list[StepAttempt | BaseException]:
        """Write a batch of step attempts in one statement; a refused item fails alone."""
        rows = await self._fetchall(
            self._q.insert_step_attempts,
            {
                "namespace_ids": [item.namespace_id for item in items],
                "ids": [item.id for item in items],
                "run_ids": [item.run_id for item in items],
                "worker_ids": [item.worker_id for item in items],
                "step_names": [item.step_name for item in items],
                "kinds": [item.kind for item in items],
                "statuses": [item.status for item in items],
                "configs": [item.config for item in items],
                "contexts": [item.context for item in items],
                "outputs": [item.output for item in items],
            },
        )
        inserted = {attempt.id: attempt for attempt in map(_to_step, rows)}
        return [
            inserted.get(item.id)
            or WriteConflictError(
                f"Failed to create {'completed ' if item.status == 'completed' else ''}step attempt"
            )
            for item in items
        ]

    async def get_step_attempt(self, params: GetStepAttemptParams) -> StepAttempt | None:
        """Return the step attempt, or None."""
        row = await self._read_one(
            self._q.select_step_attempt, self._params(step_id=params.step_attempt_id)
        )
        return None if row is None else _to_step(row)

    async def list_step_attempts(self, params: ListStepAttemptsParams) -> Page[StepAttempt]:
        """List a run's step attempts oldest first, with cursor pagination."""
        return await self._list_page(
            "step_attempts",
            "ASC",
            ['"namespace_id" = %(ns)s', '"workflow_run_id" = %(run_id)s'],
            self._params(run_id=params.workflow_run_id),
            params.limit,
            params.after,
            params.before,
        )

    async def complete_step_attempt(self, params: CompleteStepAttemptParams) -> StepAttempt:
        """Fenced: mark the attempt completed (a repeat keeps the first output)."""
        row = await self._fetchone(
            self._q.complete_step_attempt,
            self._owned(
                params.workflow_run_id,
                params.worker_id,
                step_id=params.step_attempt_id,
                output=_jsonb(params.output),
            ),
        )
        return _to_step(_require(row, "mark step attempt completed"))

    async def fail_step_attempt(self, params: FailStepAttemptParams) -> StepAttempt:
        """Fenced: mark the attempt failed (a repeat keeps the first error)."""
        row = await self._fetchone(
            self._q.fail_step_attempt,
            self._owned(
                params.workflow_run_id,
                params.worker_id,
                step_id=params.step_attempt_id,
                error=_jsonb(params.error),
            ),
        )
        return _to_step(_require(row, "mark step attempt failed"))

    async def set_step_attempt_child_workflow_run(
        self, params: SetStepAttemptChildWorkflowRunParams
    ) -> StepAttempt:
        """Fenced: link a running attempt to the child run it started."""
        row = await self._fetchone(
            self._q.set_step_child,
            self._owned(
                params.workflow_run_id,
                params.worker_id,
                step_id=params.step_attempt_id,
                child_ns=params.child_workflow_run_namespace_id,
                child_id=params.child_workflow_run_id,
            ),
        )
        return _to_step(_require(row, "set step attempt child workflow run"))

    # -- signals -------------------------------------------------------------

    async def send_signal(self, params: SendSignalParams) -> SendSignalResult:
        """Deliver ``data`` once to every running wait on the signal, and wake those runs."""
        values = self._params(
            signal=params.signal,
            data=_jsonb(params.data),
            idempotency_key=params.idempotency_key,
        )
        async with self._connection() as connection, connection.transaction():
            if params.idempotency_key is not None:
                values["scope"] = _lock_scope(
                    namespaceId=self._namespace_id,
                    signal=params.signal,
                    idempotencyKey=params.idempotency_key,
                )
                await connection.execute(self._q.lock_idempotency_scope, values)
                cursor = await connection.execute(self._q.select_signal_runs_by_key, values)
                earlier = [row[0] for row in await cursor.fetchall()]
                if earlier:
                    return SendSignalResult(workflow_run_ids=earlier)
            cursor = await connection.execute(self._q.deliver_signal, values)
            delivered = list(dict.fromkeys(row[0] for row in await cursor.fetchall()))
            if delivered:
                values["run_ids"] = delivered
                await connection.execute(self._q.lock_runs, values)
                await connection.execute(self._q.wake_parked_runs, values)
        return SendSignalResult(workflow_run_ids=delivered)

    async def get_signal_delivery(self, params: GetSignalDeliveryParams) -> SignalDelivery | None:
        """Return what was delivered to a waiting attempt, or None."""
        row = await self._read_one(
            self._q.select_signal_delivery, self._params(step_id=params.step_attempt_id)
        )
        return None if row is None else SignalDelivery(data=row[0])

    # -- helpers -------------------------------------------------------------

    def _owned(self, workflow_run_id: str, worker_id: str, **values: Any) -> dict[str, Any]:
        return self._params(run_id=workflow_run_id, worker_id=worker_id, **values)

    async def _list_page(
        self,
        table: str,
        natural_order: str,
        conditions: list[str],
        values: dict[str, Any],
        limit: int | None,
        after: str | None,
        before: str | None,
    ) -> Page[Any]:
        page_size = DEFAULT_PAGE_SIZE if limit is None else limit
        if page_size < 1:
            raise ValueError(f"limit must be at least 1, got {page_size}")
        cursor = decode_list_cursor(after, before)
        order = natural_order
        if before:
            order = "ASC" if natural_order == "DESC" else "DESC"
        if cursor is not None:
            operator = ">" if order == "ASC" else "<"
            conditions = [*conditions, f'("created_at", "id") {operator} (%(c_at)s, %(c_id)s)']
            values = {**values, "c_at": cursor.created_at, "c_id": cursor.id}
        query = sql.SQL(q.LIST_PAGE).format(
            schema=sql.Identifier(self._db.schema),
            table=sql.Identifier(table),
            where=sql.SQL(" AND ".join(conditions)),
            order=sql.SQL(order),
        )
        rows = await self._read_all(query, {**values, "limit": page_size + 1})
        to_record = _to_run if table == "workflow_runs" else _to_step
        return build_page(
            [to_record(row) for row in rows],
            page_size,
            has_after=bool(after),
            has_before=bool(before),
        )
