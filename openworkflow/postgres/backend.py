"""``PostgresBackend``: many workers on many machines sharing one PostgreSQL.

The tables are the TypeScript original's, in a configurable schema, so Python
and TypeScript workers can share a database. The backend is composed of
parts, one concern each: the pools and the listener
(:mod:`~openworkflow.postgres.connection`), the plumbing every part uses
(:mod:`~openworkflow.postgres.base`), run reads, claims and parking
(:mod:`~openworkflow.postgres.runs`), the writes that end a run
(:mod:`~openworkflow.postgres.finishing`), step attempts and signals
(:mod:`~openworkflow.postgres.steps`), flow control: priority, pause and
worker registrations (:mod:`~openworkflow.postgres.flow_control`),
schedules (:mod:`~openworkflow.postgres.schedules`), and messages to one run
(:mod:`~openworkflow.postgres.messages`).
Statements run in autocommit mode; the few multi-statement operations
(idempotent create, failure, finishing a child, signals) run in short
``READ COMMITTED`` transactions. The original's tables gain only nullable
columns, and this port's own tables and migration ledger sit beside them.
"""

from __future__ import annotations

from openworkflow.backend_common import check_namespace
from openworkflow.core.backend import DEFAULT_NAMESPACE_ID
from openworkflow.core.database_url import DEFAULT_SCHEMA
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.group_commit import GroupCommit
from openworkflow.postgres.base import is_item_error
from openworkflow.postgres.connection import Database
from openworkflow.postgres.finishing import Completion
from openworkflow.postgres.forks import PostgresForks
from openworkflow.postgres.queue_age import PostgresQueueAge
from openworkflow.postgres.schema import current_migration_version
from openworkflow.postgres.steps import StepInsert
from openworkflow.redaction import redact_url

__all__ = ["PostgresBackend"]


class PostgresBackend(PostgresForks, PostgresQueueAge):
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
        _database: Database | None = None,
    ) -> None:
        self._namespace_id = check_namespace(namespace_id)
        self._db = _database or Database(
            url,
            schema,
            run_migrations=run_migrations,
            max_pool_size=max_pool_size,
            connect_timeout=connect_timeout,
            listen=listen,
        )
        self._q = self._db.queries
        self._stopped = False
        self._step_inserts: GroupCommit[StepInsert, StepAttempt] = GroupCommit(
            self._write_step_inserts, split_on=is_item_error
        )
        self._completions: GroupCommit[Completion, WorkflowRun | None] = GroupCommit(
            self._write_completions, split_on=is_item_error
        )
        self._start_run_creates()

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

    def with_namespace(self, namespace_id: str) -> PostgresBackend:
        """Return a backend on the same pool, bound to another namespace."""
        return PostgresBackend(self._db.url, namespace_id=namespace_id, _database=self._db.share())

    async def open(self) -> None:
        """Connect, migrate and start listening now instead of on first use."""
        self._check_open()
        await self._db.wait_listening()

    async def migration_version(self) -> int:
        """The highest applied migration of the schema (-1 for none), read on the pool."""
        async with self._connection() as connection:
            return await current_migration_version(connection, self._db.schema)

    async def stop(self) -> None:
        """Close this backend; the pool closes when its last namespace stops."""
        if self._stopped:
            return
        self._stopped = True
        await self._db.release()
