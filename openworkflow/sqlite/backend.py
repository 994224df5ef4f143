"""``SqliteBackend``: the embedded backend on the standard library's sqlite3.

The backend is composed of parts, one concern each: the connection and its
thread (:mod:`~openworkflow.sqlite.connection`), the schema
(:mod:`~openworkflow.sqlite.schema`), run reads, claims and parking
(:mod:`~openworkflow.sqlite.runs`), the writes that end a run
(:mod:`~openworkflow.sqlite.finishing`), step attempts and signals
(:mod:`~openworkflow.sqlite.steps`), flow control: priority, pause and
worker registrations (:mod:`~openworkflow.sqlite.flow_control`), schedules
(:mod:`~openworkflow.sqlite.schedules`), and messages to one run
(:mod:`~openworkflow.sqlite.messages`). Every statement is in
:mod:`~openworkflow.sqlite.queries`, bound by name.
"""

from __future__ import annotations

from openworkflow.backend_common import check_namespace
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.group_commit import GroupCommit
from openworkflow.sqlite.connection import PAGE_CACHE_KIB, Database
from openworkflow.sqlite.finishing import Completion
from openworkflow.sqlite.forks import SqliteForks
from openworkflow.sqlite.queue_age import SqliteQueueAge
from openworkflow.sqlite.schema import (
    current_migration_version,
    migrate,
    migration_script,
    migration_scripts,
)
from openworkflow.sqlite.steps import StepWrite

__all__ = [
    "PAGE_CACHE_KIB",
    "SqliteBackend",
    "current_migration_version",
    "migrate",
    "migration_script",
    "migration_scripts",
]


class SqliteBackend(SqliteForks, SqliteQueueAge):
    """Backend storing runs in a SQLite file (or ``":memory:"``), bound to one namespace.

    Example:
        ``backend = SqliteBackend("openworkflow/backend.db")``

    Args:
        path: Database file path, or ``":memory:"`` for a private in-memory database.
        namespace_id: The namespace every call reads and writes.
        run_migrations: Create or upgrade the tables on open (the default).
        busy_timeout_ms: How long a write waits for another process's lock.
        create: Create the file when it does not exist (the default); with
            False, a missing file raises
            :class:`~openworkflow.errors.DatabaseNotFoundError` instead.
    """

    def __init__(
        self,
        path: str = ":memory:",
        namespace_id: str = "default",
        *,
        run_migrations: bool = True,
        busy_timeout_ms: int = 5000,
        create: bool = True,
        _database: Database | None = None,
    ) -> None:
        self._namespace_id = check_namespace(namespace_id)
        self._db = _database or Database(str(path), busy_timeout_ms, run_migrations, create)
        self._stopped = False
        self._step_writes: GroupCommit[StepWrite, StepAttempt] = GroupCommit(
            self._write_steps, max_in_flight=1
        )
        self._completions: GroupCommit[Completion, WorkflowRun] = GroupCommit(
            self._write_completions, max_in_flight=1
        )
        self._start_run_creates()

    @property
    def namespace_id(self) -> str:
        """The namespace every call reads and writes."""
        return self._namespace_id

    @property
    def path(self) -> str:
        """The database path given at construction."""
        return self._db.path

    def with_namespace(self, namespace_id: str) -> SqliteBackend:
        """Return a backend on the same database and connection, bound to another namespace."""
        return SqliteBackend(namespace_id=namespace_id, _database=self._db.share())

    async def migration_version(self) -> int | None:
        """The highest applied migration (-1 for none); None for an in-memory database."""
        if self._db.path == ":memory:":
            return None
        return await self._run(current_migration_version)

    async def stop(self) -> None:
        """Close this backend; the connection closes when its last user stops."""
        if self._stopped:
            return
        self._stopped = True
        await self._db.release()
