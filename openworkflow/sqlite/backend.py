"""``SqliteBackend``: the embedded backend on the standard library's sqlite3.

One connection lives on one dedicated thread, so the event loop never waits
on SQLite. The database runs in WAL mode with a busy timeout, and every
transaction that writes after reading starts with ``BEGIN IMMEDIATE`` so that
several processes sharing a file queue for the lock instead of failing with
"database is locked". Timestamps come from the application clock and are
stored as ISO strings with milliseconds, which sort like the times they name.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from openworkflow.core import clock
from openworkflow.core import json as ow_json
from openworkflow.core.backend import (
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
from openworkflow.core.id_prefix import (
    check_prefix_limit,
    check_run_id_prefix,
    prefix_upper_bound,
)
from openworkflow.core.ids import new_id
from openworkflow.core.json import check_name
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
    DatabaseNotFoundError,
    WriteConflictError,
)
from openworkflow.group_commit import GroupCommit
from openworkflow.notifications import ChangeNotifier
from openworkflow.sqlite import queries as q
from openworkflow.sqlite.watcher import DataVersionWatcher

T = TypeVar("T")

PAGE_CACHE_KIB = 32 * 1024
"""SQLite page cache per connection, in KiB (the default is 2 MiB)."""
R = TypeVar("R", WorkflowRun, StepAttempt)
_iso = clock.to_iso
_iso_or_none = clock.to_iso_or_none


class _Database:
    """One sqlite3 connection, used only from its own thread."""

    def __init__(
        self, path: str, busy_timeout_ms: int, run_migrations: bool, create: bool = True
    ) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="openworkflow-sqlite")
        self._connection: sqlite3.Connection | None = None
        self._users = 1
        self.closed = False
        self.notifier = ChangeNotifier()
        self._watcher: DataVersionWatcher | None = None
        if path != ":memory:":
            self._watcher = DataVersionWatcher(path, self.notifier)
            self.notifier.on_wait = self._watcher.wake
        try:
            self._executor.submit(self._open, busy_timeout_ms, run_migrations, create).result()
        except Exception as error:
            self._executor.shutdown(wait=True)  # its one job is over: returns at once
            if self._watcher is not None:
                self._watcher.stop()
            if isinstance(error, DatabaseNotFoundError):
                raise
            raise BackendError(
                f"SQLite backend failed to open database {path!r}: {error}. "
                "Check the path is valid and writable."
            ) from error

    def _open(self, busy_timeout_ms: int, run_migrations: bool, create: bool) -> None:
        connection = _connect(self.path, busy_timeout_ms, create)
        try:
            connection.row_factory = sqlite3.Row
            if self.path != ":memory:":
                _enable_wal(connection, busy_timeout_ms)
                # WAL keeps commits durable with one fsync at checkpoints; NORMAL
                # is the documented pairing and cannot corrupt the database.
                connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute("PRAGMA foreign_keys = ON")
            # A larger page cache than the 2 MiB default keeps a busy queue's
            # indexes in memory (the cache grows only as pages are read).
            connection.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
            if run_migrations:
                migrate(connection)
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the database thread."""
        if self.closed:
            raise BackendClosedError("the SQLite backend was stopped; create a new one")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._connection is None:
            raise BackendClosedError("the SQLite backend was stopped; create a new one")
        try:
            return fn(self._connection)
        except sqlite3.OperationalError as error:
            if _is_busy(error):
                # Another process held the write lock past the busy timeout: a
                # passing fault (the pass is handed back and retried), not a
                # workflow failure.
                raise BackendUnavailableError(
                    f"SQLite database {self.path!r} is busy: {error}. Another process held "
                    f"its write lock longer than the busy timeout ({self._busy_timeout_ms} ms)."
                ) from error
            raise

    def share(self) -> _Database:
        self._users += 1
        return self

    async def release(self) -> None:
        self._users -= 1
        if self._users > 0 or self.closed:
            return
        self.closed = True
        if self._watcher is not None:
            self._watcher.stop()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        # Its last job is done, so its thread ends at once: no thread outlives stop().
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._watcher is not None:
            self._watcher.join()
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _connect(path: str, busy_timeout_ms: int, create: bool) -> sqlite3.Connection:
    """Open the file; without ``create``, a missing file is an error, not a new database."""
    target, uri = path, False
    if not create and path != ":memory:":
        # mode=rw opens an existing file read-write and never creates one.
        target, uri = Path(path).resolve().as_uri() + "?mode=rw", True
    try:
        return sqlite3.connect(
            target,
            timeout=busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
            uri=uri,
        )
    except sqlite3.OperationalError:
        resolved = Path(path).resolve()
        if not create and not resolved.exists():
            raise DatabaseNotFoundError(str(resolved)) from None
        raise


def migration_scripts() -> list[str]:
    """Return the migration SQL, in version order (index = version)."""
    folder = resources.files("openworkflow.sqlite").joinpath("migrations")
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [folder.joinpath(name).read_text(encoding="utf-8") for name in names]


def current_migration_version(connection: sqlite3.Connection) -> int:
    """Highest applied migration, or -1 for a fresh database."""
    if connection.execute(q.MIGRATIONS_TABLE_EXISTS).fetchone()[0] == 0:
        return -1
    version = connection.execute(q.CURRENT_MIGRATION_VERSION).fetchone()[0]
    return -1 if version is None else int(version)


def migrate(connection: sqlite3.Connection) -> None:
    """Apply the migrations the database lacks, each in its own immediate transaction.

    Then the indexes this port adds (:data:`~openworkflow.sqlite.queries.EXTRA_INDEXES`,
    not versioned, ``IF NOT EXISTS``).
    """
    for version, script in enumerate(migration_scripts()):
        if version <= current_migration_version(connection):
            continue
        connection.executescript(f"BEGIN IMMEDIATE;\n{script}\nCOMMIT;")
    connection.executescript(q.EXTRA_INDEXES)


def _transaction(connection: sqlite3.Connection, body: Callable[[], T]) -> T:
    """Run ``body`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolling back on error."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        result = body()
    except BaseException:
        # The original error matters more than a failed rollback.
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return result


@dataclass(frozen=True, slots=True)
class _StepWrite:
    """One step-attempt insert waiting for its group-commit batch."""

    query: str
    args: tuple[Any, ...]
    operation: str


@dataclass(frozen=True, slots=True)
class _Completion:
    """One run completion waiting for its group-commit batch."""

    args: tuple[Any, ...]
    now: str


Item = TypeVar("Item")


def _write_each(
    connection: sqlite3.Connection,
    items: Sequence[Item],
    write: Callable[[sqlite3.Connection, Item], T],
    finish: Callable[[list[T | BaseException]], None] | None = None,
) -> list[T | BaseException]:
    """Write ``items`` in one transaction, each in its own savepoint.

    An item that fails (its fence refused it, or SQLite raised) is rolled back
    alone and its error returned in its place; the others commit together.
    ``finish(outcomes)`` runs last, in the same transaction.
    """

    def body() -> list[T | BaseException]:
        outcomes: list[T | BaseException] = []
        for item in items:
            connection.execute("SAVEPOINT ow_item")
            try:
                outcomes.append(write(connection, item))
            except Exception as error:  # this item's fault only: undo it alone
                connection.execute("ROLLBACK TO ow_item")
                outcomes.append(error)
            connection.execute("RELEASE ow_item")
        if finish is not None:
            finish(outcomes)
        return outcomes

    return _transaction(connection, body)


def _enable_wal(connection: sqlite3.Connection, busy_timeout_ms: int) -> None:
    """Switch to WAL, retrying while another process holds the fresh file's lock.

    Changing the journal mode needs an exclusive lock and SQLite does not always
    wait for it with the busy handler (several processes opening one new file
    at once get "database is locked" at once), so wait here, up to the timeout.
    """
    deadline = time.monotonic() + busy_timeout_ms / 1000
    delay = 0.005
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if not _is_busy(error) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _is_busy(error: sqlite3.OperationalError) -> bool:
    name = getattr(error, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in str(error)


def _require(row: sqlite3.Row | None, operation: str) -> sqlite3.Row:
    if row is None:
        raise WriteConflictError(f"Failed to {operation}")
    return row


def _new_id() -> str:
    return new_id()


class SqliteBackend:
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
        _database: _Database | None = None,
    ) -> None:
        if not isinstance(namespace_id, str) or not namespace_id:
            raise ValueError("namespace_id must be a non-empty string")
        check_name(namespace_id, "namespace_id")
        self._namespace_id = namespace_id
        self._db = _database or _Database(str(path), busy_timeout_ms, run_migrations, create)
        self._stopped = False
        self._step_writes: GroupCommit[_StepWrite, StepAttempt] = GroupCommit(
            self._write_steps, max_in_flight=1
        )
        self._completions: GroupCommit[_Completion, WorkflowRun] = GroupCommit(
            self._write_completions, max_in_flight=1
        )

    @property
    def namespace_id(self) -> str:
        """The namespace every call reads and writes."""
        return self._namespace_id

    @property
    def notifier(self) -> ChangeNotifier:
        """In-process wake-ups for workers and result waiters sharing this database."""
        return self._db.notifier

    @property
    def path(self) -> str:
        """The database path given at construction."""
        return self._db.path

    def with_namespace(self, namespace_id: str) -> SqliteBackend:
        """Return a backend on the same database and connection, bound to another namespace."""
        return SqliteBackend(namespace_id=namespace_id, _database=self._db.share())

    async def stop(self) -> None:
        """Close this backend; the connection closes when its last user stops."""
        if self._stopped:
            return
        self._stopped = True
        await self._db.release()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._stopped:
            raise BackendClosedError("the SQLite backend was stopped; create a new one")
        return await self._db.run(fn)

    # -- workflow runs -------------------------------------------------------

    async def create_workflow_run(self, params: CreateWorkflowRunParams) -> WorkflowRun:
        """Insert a pending run, or return the one with the same idempotency key (24 h)."""
        values = self._insert_run_values(params)
        if params.idempotency_key is None:
            run = await self._run(
                lambda c: _to_run(c.execute(q.INSERT_WORKFLOW_RUN, values).fetchone())
            )
            self.notifier.notify_work_available()
            return run
        cutoff = _iso(clock.now() - timedelta(milliseconds=RUN_IDEMPOTENCY_PERIOD_MS))
        lookup = (self._namespace_id, params.workflow_name, params.idempotency_key, cutoff)

        def create(c: sqlite3.Connection) -> WorkflowRun:
            def body() -> WorkflowRun:
                existing = c.execute(q.SELECT_RUN_BY_IDEMPOTENCY_KEY, lookup).fetchone()
                row = existing or c.execute(q.INSERT_WORKFLOW_RUN, values).fetchone()
                return _to_run(row)

            return _transaction(c, body)

        run = await self._run(create)
        self.notifier.notify_work_available()
        return run

    def _insert_run_values(self, params: CreateWorkflowRunParams) -> tuple[Any, ...]:
        now = _iso(clock.now())
        available_at = _iso(params.available_at) if params.available_at else now
        return (
            self._namespace_id,
            _new_id(),
            params.workflow_name,
            params.version,
            params.idempotency_key,
            ow_json.dumps(params.config if params.config is not None else {}),
            ow_json.dumps_or_none(params.context),
            ow_json.dumps_or_none(params.input),
            params.parent_step_attempt_namespace_id,
            params.parent_step_attempt_id,
            available_at,
            _iso_or_none(params.deadline_at),
            now,
            now,
        )

    async def get_workflow_run(self, params: GetWorkflowRunParams) -> WorkflowRun | None:
        """Return the run, or None."""
        args = (self._namespace_id, params.workflow_run_id)
        row = await self._run(lambda c: c.execute(q.SELECT_WORKFLOW_RUN, args).fetchone())
        return None if row is None else _to_run(row)

    async def list_workflow_runs(self, params: ListWorkflowRunsParams) -> Page[WorkflowRun]:
        """List runs newest first with cursor pagination and optional filters."""
        where = '"namespace_id" = ?'
        args: list[Any] = [self._namespace_id]
        if params.status:
            where += ' AND "status" = ?'
            args.append(params.status)
        if params.workflow_name:
            where += ' AND "workflow_name" = ?'
            args.append(params.workflow_name)
        return await self._list_page(
            "workflow_runs",
            "DESC",
            where,
            args,
            params.limit,
            params.after,
            params.before,
            _to_run,
        )

    async def find_workflow_runs_by_id_prefix(
        self, params: FindWorkflowRunsByIdPrefixParams
    ) -> list[WorkflowRun]:
        """Up to ``limit`` runs whose id starts with ``prefix``, in id order (a key range)."""
        prefix = check_run_id_prefix(params.prefix)
        args = (
            self._namespace_id,
            prefix,
            prefix_upper_bound(prefix),
            check_prefix_limit(params.limit),
        )
        rows = await self._run(
            lambda c: c.execute(q.SELECT_WORKFLOW_RUNS_BY_ID_RANGE, args).fetchall()
        )
        return [_to_run(row) for row in rows]

    async def count_workflow_runs(self) -> WorkflowRunCounts:
        """Count runs per status in this namespace."""
        rows = await self._run(
            lambda c: c.execute(q.COUNT_WORKFLOW_RUNS, (self._namespace_id,)).fetchall()
        )
        return WorkflowRunCounts(**fold_status_counts((row[0], row[1]) for row in rows))

    async def count_step_attempts(self) -> StepAttemptCounts:
        """Count step attempts per status in this namespace."""
        rows = await self._run(
            lambda c: c.execute(q.COUNT_STEP_ATTEMPTS, (self._namespace_id,)).fetchall()
        )
        return StepAttemptCounts(**fold_step_attempt_counts((row[0], row[1]) for row in rows))

    async def claim_workflow_run(self, params: ClaimWorkflowRunParams) -> WorkflowRun | None:
        """Expire deadlines, then claim the next available run under the write lock."""
        claimed = await self.claim_workflow_runs(
            ClaimWorkflowRunsParams(
                worker_ids=[params.worker_id], lease_duration_ms=params.lease_duration_ms
            )
        )
        return claimed[0] if claimed else None

    async def claim_workflow_runs(self, params: ClaimWorkflowRunsParams) -> list[WorkflowRun]:
        """Expire deadlines, then claim up to one run per worker id, in one transaction."""
        ns = self._namespace_id
        worker_ids = list(params.worker_ids)
        if not worker_ids:
            return []

        def claim(c: sqlite3.Connection) -> tuple[list[WorkflowRun], list[str]]:
            now_dt = clock.now()
            now = _iso(now_dt)
            lease_until = _iso(now_dt + timedelta(milliseconds=params.lease_duration_ms))

            def body() -> tuple[list[WorkflowRun], list[str]]:
                error = ow_json.dumps({"message": DEADLINE_EXCEEDED_MESSAGE})
                expired_rows = c.execute(q.EXPIRE_DEADLINES, (error, now, now, ns, now)).fetchall()
                expired = [row[0] for row in expired_rows]
                if expired:
                    c.execute(q.CLOSE_OPEN_STEP_ATTEMPTS, (error, now, ns, ow_json.dumps(expired)))
                for row in expired_rows:
                    # Unlike the original, a child failed by its deadline wakes its parent.
                    if row[2] is not None and row[3] is not None:
                        _wake_parent_of(c, row[2], row[3], row[1], row[0], now)
                wanted = len(worker_ids)
                # (run id, whether a worker still held it: its lease expired)
                due = [
                    (row[0], False)
                    for row in c.execute(q.SELECT_CLAIMABLE_PENDING, (ns, now, now, wanted))
                ]
                if len(due) < wanted:
                    more = (ns, now, now, wanted - len(due))
                    due += [
                        (row[0], bool(row[1]))
                        for row in c.execute(q.SELECT_CLAIMABLE_RUNNING, more)
                    ]
                claimed = [
                    _to_claimed_run(
                        c.execute(
                            q.CLAIM_WORKFLOW_RUN, (worker_id, lease_until, now, now, ns, run_id)
                        ).fetchone(),
                        lease_expired,
                    )
                    for (run_id, lease_expired), worker_id in zip(due, worker_ids, strict=False)
                ]
                return claimed, expired

            return _transaction(c, body)

        claimed, expired = await self._run(claim)
        if expired:
            self.notifier.notify_runs_finished(expired)
            self.notifier.notify_work_available()  # a parent may have been woken
        return claimed

    async def extend_workflow_run_lease(self, params: ExtendWorkflowRunLeaseParams) -> WorkflowRun:
        """Fenced: move the lease of an owned running run to now + lease."""
        now_dt = clock.now()
        args = (
            _iso(now_dt + timedelta(milliseconds=params.lease_duration_ms)),
            _iso(now_dt),
            *self._owned(params.workflow_run_id, params.worker_id),
        )
        row = await self._run(lambda c: c.execute(q.EXTEND_LEASE, args).fetchone())
        return _to_run(_require(row, "extend lease for workflow run"))

    async def sleep_workflow_run(self, params: SleepWorkflowRunParams) -> WorkflowRun:
        """Fenced: park the run until ``available_at`` (or now if a wait is already answered)."""
        now = _iso(clock.now())
        resume_at = _iso(params.available_at)
        args = (
            resume_at,
            now,
            now,
            resume_at,
            now,
            self._namespace_id,
            params.workflow_run_id,
            params.worker_id,
        )
        ns, run_id, worker_id = self._owned(params.workflow_run_id, params.worker_id)
        abandoned = [
            (ns, run_id, step_id, ns, run_id, worker_id)
            for step_id in params.abandoned_step_attempt_ids
        ]

        def park(c: sqlite3.Connection) -> sqlite3.Row | None:
            def body() -> sqlite3.Row | None:
                c.executemany(q.DELETE_ABANDONED_STEP_ATTEMPT, abandoned)
                row: sqlite3.Row | None = c.execute(q.SLEEP_WORKFLOW_RUN, args).fetchone()
                return row

            return _transaction(c, body) if abandoned else body()

        row = await self._run(park)
        run = _to_run(_require(row, "sleep workflow run"))
        if run.available_at is not None and run.available_at <= clock.now():
            self.notifier.notify_work_available()
        return run

    async def complete_workflow_run(self, params: CompleteWorkflowRunParams) -> WorkflowRun:
        """Fenced: mark the run completed and wake its parent (group-committed)."""
        now = _iso(clock.now())
        args = (
            ow_json.dumps_or_none(params.output),
            now,
            now,
            *self._owned(params.workflow_run_id, params.worker_id),
        )
        run = await self._completions.submit(_Completion(args, now))
        self._notify_finished(run)
        return run

    async def _write_completions(
        self, completions: Sequence[_Completion]
    ) -> list[WorkflowRun | BaseException]:
        """Group commit: the completions of concurrent executions in one transaction."""

        def complete(c: sqlite3.Connection, item: _Completion) -> WorkflowRun:
            row = _require(
                c.execute(q.COMPLETE_WORKFLOW_RUN, item.args).fetchone(),
                "mark workflow run completed",
            )
            run = _to_run(row)
            _wake_parent(c, run, item.now)
            return run

        def close_attempts(
            c: sqlite3.Connection, outcomes: list[WorkflowRun | BaseException]
        ) -> None:
            # One statement for the whole batch, not one per completed run.
            runs = [run for run in outcomes if isinstance(run, WorkflowRun)]
            if runs:
                _close_open_step_attempts(c, self._namespace_id, runs, completions[0].now)

        return await self._run(
            lambda c: _write_each(c, completions, complete, lambda o: close_attempts(c, o))
        )

    async def fail_workflow_run(self, params: FailWorkflowRunParams) -> WorkflowRun:
        """Fenced: apply the retry decision; a terminal failure wakes the parent."""
        attempts, deadline_at = params.attempts, params.deadline_at
        if attempts is None:
            current = await self.get_workflow_run(
                GetWorkflowRunParams(workflow_run_id=params.workflow_run_id)
            )
            if current is None:
                raise WriteConflictError("Failed to mark workflow run failed")
            attempts, deadline_at = current.attempts, current.deadline_at
        now_dt = clock.now()
        update = compute_failed_workflow_run_update(
            params.retry_policy, attempts, deadline_at, params.error, now_dt
        )
        now = _iso(now_dt)
        args = (
            update.status,
            _iso_or_none(update.available_at),
            _iso_or_none(update.finished_at),
            ow_json.dumps_or_none(update.error),
            now,
            *self._owned(params.workflow_run_id, params.worker_id),
        )

        def fail(c: sqlite3.Connection) -> WorkflowRun:
            def body() -> WorkflowRun:
                row = _require(
                    c.execute(q.FAIL_WORKFLOW_RUN, args).fetchone(), "mark workflow run failed"
                )
                run = _to_run(row)
                if run.status == "failed":
                    _close_open_step_attempts(c, self._namespace_id, [run], now)
                    _wake_parent(c, run, now)
                return run

            return _transaction(c, body)

        run = await self._run(fail)
        if run.status == "failed":
            self._notify_finished(run)
        return run

    async def reschedule_workflow_run_after_failed_step_attempt(
        self, params: RescheduleWorkflowRunAfterFailedStepAttemptParams
    ) -> WorkflowRun:
        """Fenced: send the run back to pending until ``available_at``."""
        args = (
            _iso(params.available_at),
            ow_json.dumps_or_none(params.error),
            _iso(clock.now()),
            *self._owned(params.workflow_run_id, params.worker_id),
        )
        row = await self._run(lambda c: c.execute(q.RESCHEDULE_AFTER_FAILED_STEP, args).fetchone())
        return _to_run(_require(row, "reschedule workflow run after failed step attempt"))

    async def cancel_workflow_run(self, params: CancelWorkflowRunParams) -> WorkflowRun:
        """Cancel an active run (idempotently) and wake its parent."""
        now = _iso(clock.now())
        args = (now, now, self._namespace_id, params.workflow_run_id)

        def cancel(c: sqlite3.Connection) -> WorkflowRun | None:
            def body() -> WorkflowRun | None:
                row = c.execute(q.CANCEL_WORKFLOW_RUN, args).fetchone()
                if row is None:
                    return None
                run = _to_run(row)
                _close_open_step_attempts(c, self._namespace_id, [run], now)
                _wake_parent(c, run, now)
                return run

            return _transaction(c, body)

        canceled = await self._run(cancel)
        if canceled is not None:
            self._notify_finished(canceled)
            return canceled
        existing = await self.get_workflow_run(
            GetWorkflowRunParams(workflow_run_id=params.workflow_run_id)
        )
        return resolve_cancel_conflict(params.workflow_run_id, existing)

    async def retry_workflow_run(self, params: RetryWorkflowRunParams) -> WorkflowRun:
        """Put a failed or canceled run back to pending; failed steps will run again."""
        now = _iso(clock.now())
        key = (self._namespace_id, params.workflow_run_id)

        def retry(c: sqlite3.Connection) -> WorkflowRun | None:
            def body() -> WorkflowRun | None:
                row = c.execute(q.RETRY_WORKFLOW_RUN, (now, now, *key)).fetchone()
                if row is None:
                    return None
                c.execute(q.DELETE_ATTEMPTS_TO_RERUN, key)
                return _to_run(row)

            return _transaction(c, body)

        retried = await self._run(retry)
        if retried is None:
            existing = await self.get_workflow_run(
                GetWorkflowRunParams(workflow_run_id=params.workflow_run_id)
            )
            return resolve_retry_conflict(params.workflow_run_id, existing)
        self.notifier.notify_work_available()
        return retried

    # -- step attempts -------------------------------------------------------

    async def create_step_attempt(self, params: CreateStepAttemptParams) -> StepAttempt:
        """Fenced: insert a running step attempt for an owned run."""
        now = _iso(clock.now())
        args = (
            *self._new_step_values(params),
            now,
            now,
            now,
            *self._owned(params.workflow_run_id, params.worker_id),
        )
        return await self._step_writes.submit(
            _StepWrite(q.INSERT_STEP_ATTEMPT, args, "create step attempt")
        )

    async def create_completed_step_attempt(
        self, params: CreateCompletedStepAttemptParams
    ) -> StepAttempt:
        """Fenced: insert a completed step attempt (with its output) for an owned run."""
        now = _iso(clock.now())
        args = (
            *self._new_step_values(params),
            ow_json.dumps_or_none(params.output),
            now,
            now,
            now,
            now,
            *self._owned(params.workflow_run_id, params.worker_id),
        )
        return await self._step_writes.submit(
            _StepWrite(q.INSERT_COMPLETED_STEP_ATTEMPT, args, "create completed step attempt")
        )

    async def _write_steps(self, writes: Sequence[_StepWrite]) -> list[StepAttempt | BaseException]:
        """Group commit: the step inserts of concurrent executions in one transaction."""

        def write(c: sqlite3.Connection, item: _StepWrite) -> StepAttempt:
            return _to_step(_require(c.execute(item.query, item.args).fetchone(), item.operation))

        return await self._run(lambda c: _write_each(c, writes, write))

    def _new_step_values(
        self, params: CreateStepAttemptParams | CreateCompletedStepAttemptParams
    ) -> tuple[str | None, ...]:
        """Namespace, id, run, name, kind, config and context of a new step attempt."""
        return (
            self._namespace_id,
            _new_id(),
            params.workflow_run_id,
            params.step_name,
            params.kind,
            ow_json.dumps(params.config if params.config is not None else {}),
            ow_json.dumps_or_none(params.context),
        )

    async def get_step_attempt(self, params: GetStepAttemptParams) -> StepAttempt | None:
        """Return the step attempt, or None."""
        args = (self._namespace_id, params.step_attempt_id)
        row = await self._run(lambda c: c.execute(q.SELECT_STEP_ATTEMPT, args).fetchone())
        return None if row is None else _to_step(row)

    async def list_step_attempts(self, params: ListStepAttemptsParams) -> Page[StepAttempt]:
        """List a run's step attempts oldest first, with cursor pagination."""
        return await self._list_page(
            "step_attempts",
            "ASC",
            '"namespace_id" = ? AND "workflow_run_id" = ?',
            [self._namespace_id, params.workflow_run_id],
            params.limit,
            params.after,
            params.before,
            _to_step,
        )

    async def complete_step_attempt(self, params: CompleteStepAttemptParams) -> StepAttempt:
        """Fenced: mark the attempt completed (a repeat keeps the first output)."""
        now = _iso(clock.now())
        args = (
            ow_json.dumps_or_none(params.output),
            now,
            now,
            *self._step_owned(params.workflow_run_id, params.step_attempt_id, params.worker_id),
        )
        row = await self._run(lambda c: c.execute(q.COMPLETE_STEP_ATTEMPT, args).fetchone())
        return _to_step(_require(row, "mark step attempt completed"))

    async def fail_step_attempt(self, params: FailStepAttemptParams) -> StepAttempt:
        """Fenced: mark the attempt failed (a repeat keeps the first error)."""
        now = _iso(clock.now())
        args = (
            ow_json.dumps_or_none(params.error),
            now,
            now,
            *self._step_owned(params.workflow_run_id, params.step_attempt_id, params.worker_id),
        )
        row = await self._run(lambda c: c.execute(q.FAIL_STEP_ATTEMPT, args).fetchone())
        return _to_step(_require(row, "mark step attempt failed"))

    async def set_step_attempt_child_workflow_run(
        self, params: SetStepAttemptChildWorkflowRunParams
    ) -> StepAttempt:
        """Fenced: link a running attempt to the child run it started."""
        args = (
            params.child_workflow_run_namespace_id,
            params.child_workflow_run_id,
            _iso(clock.now()),
            *self._step_owned(params.workflow_run_id, params.step_attempt_id, params.worker_id),
        )
        row = await self._run(lambda c: c.execute(q.SET_STEP_CHILD, args).fetchone())
        return _to_step(_require(row, "set step attempt child workflow run"))

    # -- signals -------------------------------------------------------------

    async def send_signal(self, params: SendSignalParams) -> SendSignalResult:
        """Deliver ``data`` once to every running wait on the signal, and wake those runs."""
        ns = self._namespace_id
        data = ow_json.dumps_or_none(params.data)

        def send(c: sqlite3.Connection) -> list[str]:
            now = _iso(clock.now())

            def body() -> list[str]:
                if params.idempotency_key is not None:
                    earlier = c.execute(
                        q.SELECT_SIGNAL_RUNS_BY_KEY, (ns, params.signal, params.idempotency_key)
                    ).fetchall()
                    if earlier:
                        return [row[0] for row in earlier]
                delivered: list[str] = []
                for waiter in c.execute(q.SELECT_SIGNAL_WAITERS, (ns, params.signal)).fetchall():
                    inserted = c.execute(
                        q.INSERT_SIGNAL_DELIVERY,
                        (
                            ns,
                            _new_id(),
                            params.signal,
                            data,
                            params.idempotency_key,
                            waiter["workflow_run_id"],
                            waiter["id"],
                            now,
                        ),
                    ).rowcount
                    if inserted and waiter["workflow_run_id"] not in delivered:
                        delivered.append(waiter["workflow_run_id"])
                for run_id in delivered:
                    c.execute(q.WAKE_SIGNALED_RUN, (now, now, now, ns, run_id))
                return delivered

            return _transaction(c, body)

        delivered = await self._run(send)
        if delivered:
            self.notifier.notify_work_available()
        return SendSignalResult(workflow_run_ids=delivered)

    async def get_signal_delivery(self, params: GetSignalDeliveryParams) -> SignalDelivery | None:
        """Return what was delivered to a waiting attempt, or None."""
        args = (self._namespace_id, params.step_attempt_id)
        row = await self._run(lambda c: c.execute(q.SELECT_SIGNAL_DELIVERY, args).fetchone())
        return None if row is None else SignalDelivery(data=ow_json.loads(row[0]))

    # -- helpers -------------------------------------------------------------

    def _notify_finished(self, run: WorkflowRun) -> None:
        self.notifier.notify_runs_finished((run.id,))
        if run.parent_step_attempt_id is not None:
            self.notifier.notify_work_available()  # the parent may have been woken

    def _owned(self, workflow_run_id: str, worker_id: str) -> tuple[str, str, str]:
        return (self._namespace_id, workflow_run_id, worker_id)

    def _step_owned(
        self, workflow_run_id: str, step_attempt_id: str, worker_id: str
    ) -> tuple[str, ...]:
        ns = self._namespace_id
        return (ns, workflow_run_id, step_attempt_id, ns, workflow_run_id, worker_id)

    async def _list_page(
        self,
        table: str,
        natural_order: str,
        where: str,
        args: list[Any],
        limit: int | None,
        after: str | None,
        before: str | None,
        to_record: Callable[[sqlite3.Row], R],
    ) -> Page[R]:
        page_size = DEFAULT_PAGE_SIZE if limit is None else limit
        if page_size < 1:
            raise ValueError(f"limit must be at least 1, got {page_size}")
        cursor = decode_list_cursor(after, before)
        order = natural_order
        if before:
            order = "ASC" if natural_order == "DESC" else "DESC"
        cursor_op = None
        if cursor is not None:
            cursor_op = ">" if order == "ASC" else "<"
            args = [*args, _iso(cursor.created_at), cursor.id]
        sql = q.list_page_query(table, where, order, cursor_op)
        params = (*args, page_size + 1)
        rows = await self._run(lambda c: c.execute(sql, params).fetchall())
        return build_page(
            [to_record(row) for row in rows],
            page_size,
            has_after=bool(after),
            has_before=bool(before),
        )


def _close_open_step_attempts(
    c: sqlite3.Connection, namespace_id: str, runs: Sequence[WorkflowRun], now: str
) -> None:
    """Fail the running attempts of the finished ``runs`` (all of one status), in one statement."""
    error = ow_json.dumps(closed_step_attempt_error(runs[0].status))
    run_ids = ow_json.dumps([run.id for run in runs])
    c.execute(q.CLOSE_OPEN_STEP_ATTEMPTS, (error, now, namespace_id, run_ids))


def _wake_parent(c: sqlite3.Connection, child: WorkflowRun, now: str) -> None:
    if child.parent_step_attempt_namespace_id is None or child.parent_step_attempt_id is None:
        return
    _wake_parent_of(
        c,
        child.parent_step_attempt_namespace_id,
        child.parent_step_attempt_id,
        child.namespace_id,
        child.id,
        now,
    )


def _wake_parent_of(
    c: sqlite3.Connection,
    parent_ns: str,
    parent_step_attempt_id: str,
    child_ns: str,
    child_id: str,
    now: str,
) -> None:
    """Make the parked parent waiting on exactly this child available now."""
    c.execute(
        q.WAKE_PARENT,
        (now, now, now, parent_ns, parent_ns, parent_step_attempt_id, child_ns, child_id),
    )


def _to_run(row: sqlite3.Row | Sequence[Any]) -> WorkflowRun:
    return workflow_run_from_row(row, ow_json.loads, clock.from_iso)


def _to_claimed_run(row: sqlite3.Row | Sequence[Any], lease_expired: bool) -> WorkflowRun:
    # A claim's row ends with whether the run has step attempts (in the same
    # write transaction, so nothing can be missing).
    return workflow_run_from_row(
        row,
        ow_json.loads,
        clock.from_iso,
        has_step_attempts=bool(row[-1]),
        lease_expired=lease_expired,
    )


def _to_step(row: sqlite3.Row | Sequence[Any]) -> StepAttempt:
    return step_attempt_from_row(row, ow_json.loads, clock.from_iso)
