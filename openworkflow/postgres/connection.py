"""The PostgreSQL connections: the pools, the listener and the statements they share.

Statements run on a ``psycopg_pool`` pool in autocommit mode; lease renewals
and claims have small pools of their own. The pools open (and migrations run, under an
advisory lock) on first use; :mod:`~openworkflow.postgres.lifecycle` ends
their workers when the backend stops or the event loop shuts down.
"""

from __future__ import annotations

import asyncio
import select
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import psycopg
import psycopg_pool

from openworkflow.errors import BackendClosedError, BackendError, BackendUnavailableError
from openworkflow.notifications import ChangeNotifier
from openworkflow.postgres import lifecycle
from openworkflow.postgres import queries as q
from openworkflow.postgres.attempt import EngineConnection
from openworkflow.postgres.listener import NotificationListener, due_payload, work_payload
from openworkflow.postgres.schema import migrate, validate_schema_name
from openworkflow.postgres.url import URL_EXAMPLE, check_postgres_url
from openworkflow.redaction import redact_url, scrub

LEASE_POOL_SIZE = 2
"""Connections reserved for lease renewals (heartbeats), beside the main pool."""

CLAIM_POOL_SIZE = 2
"""Connections for claims, whose sessions run prepared statements on their generic plans."""

IDLE_CHECK_S = 1.0
"""A pooled connection idle longer than this is pinged before it is handed out."""

MIGRATION_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0)
"""Waits before opening again after the connection was lost while migrating."""

Pool = psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]]

PoolKind = Literal["main", "lease", "claim"]
"""Which pool a statement's connection comes from (see :meth:`Database.pool_for`)."""


def _has_unread_input(connection: psycopg.AsyncConnection[Any]) -> bool:
    """Whether the server sent something to an idle connection (e.g. a FATAL on termination)."""
    try:
        poller = select.poll()
        poller.register(connection.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


class Database:
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
        #: (bucket, key, limit) of rate limits whose token rows exist (made once each).
        self.rate_limit_scopes: set[tuple[str, str, int]] = set()
        self.base_params: dict[str, Any] = {
            "channel": q.NOTIFY_CHANNEL,
            "schema_name": schema,
            "work_payload": work_payload(schema),
            "due_payload": due_payload(schema),
        }
        self._run_migrations = run_migrations
        self._max_pool_size = max_pool_size
        self._connect_kwargs: dict[str, Any] = {"connect_timeout": max(1, round(connect_timeout))}
        self._listen = listen
        self._pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._lease_pool: Pool | None = None
        self._claim_pool: Pool | None = None
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
        """The main pool, opened (with migrations and the listener) on first use."""
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
        # A connection lost while migrating (a server restart, a terminated
        # backend) is retried with a fresh one: each migration commits whole
        # under its lock, so starting over is safe.
        for delay in (*MIGRATION_RETRY_DELAYS_S, None):
            try:
                await self._connect_and_migrate()
                break
            except psycopg.Error as error:  # only a lost connection gets here
                if delay is None:
                    raise BackendUnavailableError(
                        f"PostgreSQL backend lost its connection while migrating schema "
                        f"{self.schema!r}: {scrub(str(error).strip(), self.url)}. Check that "
                        "the server is running and try again."
                    ) from None
                await asyncio.sleep(delay)
        await self._open_pools()

    async def _connect_and_migrate(self) -> None:
        # One direct connection first: a wrong URL, a refused connection or a
        # missing permission fails here with one clear message.
        try:
            connection = await EngineConnection.connect(
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
                await self._migrate(connection)

    async def _migrate(self, connection: psycopg.AsyncConnection[Any]) -> None:
        try:
            await migrate(connection, self.schema)
        except psycopg.Error as error:
            if connection.broken or connection.closed:
                raise  # the connection was lost: _open tries again with a new one
            raise BackendError(
                f"PostgreSQL backend could not migrate schema {self.schema!r}: "
                f"{scrub(str(error).strip(), self.url)}. Grant this user CREATE on the "
                "database, or migrate as an owner and pass run_migrations=False."
            ) from None

    async def _open_pools(self) -> None:
        if self.closed:
            return
        # Opened lazily (no connection until the first renewal): clients and the
        # dashboard never renew a lease. Each pool is recorded as soon as it
        # opens, so close() finds it whatever happens next.
        self._lease_pool = self._new_pool("openworkflow-leases", LEASE_POOL_SIZE, min_size=0)
        self._pool_tasks += await lifecycle.open_pool(self._lease_pool)
        self._claim_pool = self._new_pool(
            "openworkflow-claims", CLAIM_POOL_SIZE, min_size=0, configure=_configure_claims
        )
        self._pool_tasks += await lifecycle.open_pool(self._claim_pool)
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
        self,
        name: str,
        max_size: int,
        min_size: int = 1,
        configure: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]] | None = None,
    ) -> Pool:
        return psycopg_pool.AsyncConnectionPool(
            self.url,
            connection_class=EngineConnection,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True, **self._connect_kwargs},
            configure=configure or _configure_connection,
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

    async def claim_pool(self) -> Pool:
        """The pool for claims: its sessions use cached generic plans.

        Planning a claim costs 2-5 milliseconds, several times more than
        running it, and PostgreSQL never switches a claim to its cached generic
        plan on its own (its cost estimates are pessimistic), though that plan
        runs as fast and is as index-driven (benchmarks/claim_plan.py measures
        both; the claims look runs up by key whatever the statistics, see
        claim_queries). A session setting, rather than a SET around each claim,
        keeps an idle worker's wake-up to one statement.
        """
        await self.pool()
        assert self._claim_pool is not None
        return self._claim_pool

    async def pool_for(self, kind: PoolKind) -> Pool:
        """The main pool, the lease pool or the claim pool (each opened on first use)."""
        if kind == "lease":
            return await self.lease_pool()
        if kind == "claim":
            return await self.claim_pool()
        return await self.pool()

    async def wait_listening(self, timeout: float = 5.0) -> None:
        """Wait until the LISTEN connection is up (tests and latency-sensitive callers)."""
        await self.pool()
        if self._listener is not None:
            await asyncio.wait_for(self._listener.connected.wait(), timeout)

    def share(self) -> Database:
        """Count one more backend using this pool (another namespace)."""
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
        for pool in (self._pool, self._lease_pool, self._claim_pool):
            if pool is not None:
                await lifecycle.close_pool(pool, abandoning=abandoning)
        # Closed pools have sent their workers a stop; after a loop shutdown's
        # cancellation they may still be finishing a connection attempt.
        await lifecycle.end_tasks(tasks, grace_s=grace_s)


# Time zone UTC: psycopg then hands timestamps over in datetime.UTC itself, so
# base.load_time's astimezone(UTC) returns each as it is (in the server's zone,
# even Etc/UTC, it built a new datetime for each, about 28 per run). Timestamps
# are stored and compared as instants; no statement buckets them by day (the one
# INTERVAL '1 day', for old registrations, is always 24 hours now).
_SESSION_SETTINGS = (
    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED; SET jit = off; "
    "SET TIME ZONE 'UTC'"
)


async def _configure_connection(connection: psycopg.AsyncConnection[Any]) -> None:
    # The fences and row locks assume READ COMMITTED whatever the server default.
    # JIT off: the claims' cost estimates (index walks under LIMITs, scalar
    # subplans) pass jit_above_cost on a stock server, which then spent about
    # 340 ms compiling a claim that runs in 3 ms (benchmarks/claim_plan.py).
    await connection.execute(_SESSION_SETTINGS)


async def _configure_claims(connection: psycopg.AsyncConnection[Any]) -> None:
    # Only claims run on these sessions (see Database.claim_pool): every
    # statement prepared here runs on its generic plan, planned once.
    # A claim does not wait for its commit to reach the disk (a flush behind
    # other writers' stalled for 20-70 ms on a busy machine, the whole tail of
    # timer wake-ups). Safe because the WAL is written in order: the run's
    # next write (a step, its completion, a park) commits synchronously and so
    # makes the claim durable first, and a claim lost with a server crash
    # before any such write is a claim that never happened (the run is due
    # again; the worker's fenced writes for it fail on the old attempt count).
    await connection.execute(
        f"{_SESSION_SETTINGS}; SET plan_cache_mode = force_generic_plan; "
        "SET synchronous_commit = off"
    )
