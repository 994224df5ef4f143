"""SQLite-only behaviour: opening, migrations, transactions, legacy rows written by raw SQL."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from openworkflow.core import clock as clock_module
from openworkflow.core.backend import (
    CancelWorkflowRunParams,
    CompleteWorkflowRunParams,
    CreateCompletedStepAttemptParams,
    CreateWorkflowRunParams,
    GetStepAttemptParams,
    ListWorkflowRunsParams,
    SendSignalParams,
    SetStepAttemptChildWorkflowRunParams,
)
from openworkflow.errors import (
    BackendClosedError,
    BackendError,
    InvalidRunStateError,
)
from openworkflow.sqlite import SqliteBackend, migration_scripts, queries
from openworkflow.sqlite import run_batches as sqlite_run_batches
from openworkflow.sqlite.backend import current_migration_version, migrate
from openworkflow.sqlite.connection import transaction as _transaction
from tests.backend.helpers import (
    claim,
    create_claimed_run,
    create_parked_signal_waiter,
    create_pending_run,
    create_step,
    get_run,
    list_steps,
    new_id,
    now,
    park,
)

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LATEST_VERSION = 5
TABLES = {"openworkflow_migrations", "workflow_runs", "step_attempts", "workflow_signals"}
INDEXES = {
    "workflow_runs_status_available_at_created_at_idx",
    "workflow_runs_workflow_name_idempotency_key_created_at_idx",
    "workflow_runs_parent_step_idx",
    "workflow_runs_created_at_desc_idx",
    "workflow_runs_status_created_at_desc_idx",
    "workflow_runs_workflow_name_status_created_at_desc_idx",
    "step_attempts_workflow_run_created_at_idx",
    "step_attempts_workflow_run_step_name_created_at_idx",
    "step_attempts_child_workflow_run_idx",
    "workflow_signals_step_attempt_idx",
    "workflow_signals_idempotency_idx",
    "step_attempts_signal_wait_idx",
}


@pytest.fixture(params=["memory", "file"])
async def sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqliteBackend]:
    """A SQLite backend (in memory or on disk) in a fresh namespace."""
    path = ":memory:" if request.param == "memory" else str(tmp_path / "ow.db")
    instance = SqliteBackend(path, namespace_id=str(uuid.uuid4()))
    yield instance
    await instance.stop()


async def _sql(backend: SqliteBackend, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run raw SQL on the backend's own connection (autocommit)."""

    def run(connection: sqlite3.Connection) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in connection.execute(sql, args).fetchall()]

    return await backend._db.run(run)


async def _set_run(backend: SqliteBackend, run_id: str, **columns: Any) -> None:
    assignments = ", ".join(f'"{name}" = ?' for name in columns)
    await _sql(
        backend,
        f'UPDATE "workflow_runs" SET {assignments} WHERE "namespace_id" = ? AND "id" = ?',
        *columns.values(),
        backend.namespace_id,
        run_id,
    )


def _raw_connection(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path), isolation_level=None)


def _versions(connection: sqlite3.Connection) -> list[int]:
    return [
        row[0]
        for row in connection.execute(
            'SELECT "version" FROM "openworkflow_migrations" ORDER BY "version"'
        )
    ]


def _schema_names(connection: sqlite3.Connection, kind: str) -> set[str]:
    return {
        row[0]
        for row in connection.execute("SELECT name FROM sqlite_master WHERE type = ?", (kind,))
    }


# -- opening --------------------------------------------------------------------------


def test_invalid_database_path_gives_a_helpful_error(tmp_path: Path) -> None:
    bad_path = tmp_path / f"missing-{uuid.uuid4()}" / "backend.db"

    with pytest.raises(BackendError) as caught:
        SqliteBackend(str(bad_path))

    message = str(caught.value)
    assert re.search(r"SQLite backend failed to open database.*valid and writable", message)
    assert str(bad_path) in message
    assert isinstance(caught.value.__cause__, sqlite3.Error)
    assert not bad_path.exists()


async def test_stopped_backend_refuses_calls() -> None:
    backend = SqliteBackend(":memory:")
    await backend.stop()
    await backend.stop()  # stopping twice is harmless

    with pytest.raises(BackendClosedError):
        await create_pending_run(backend)


async def test_file_database_uses_wal_and_foreign_keys(tmp_path: Path) -> None:
    backend = SqliteBackend(str(tmp_path / "ow.db"))
    try:
        assert await _sql(backend, "PRAGMA journal_mode") == [("wal",)]
        assert await _sql(backend, "PRAGMA foreign_keys") == [(1,)]
    finally:
        await backend.stop()


# -- migrations -----------------------------------------------------------------------


def test_fresh_database_has_no_migration_version(tmp_path: Path) -> None:
    connection = _raw_connection(tmp_path / "fresh.db")
    try:
        assert current_migration_version(connection) == -1
    finally:
        connection.close()


def test_migrations_track_versions_zero_to_latest(tmp_path: Path) -> None:
    assert len(migration_scripts()) == LATEST_VERSION + 1
    connection = _raw_connection(tmp_path / "ow.db")
    try:
        migrate(connection)

        assert current_migration_version(connection) == LATEST_VERSION
        assert _versions(connection) == list(range(LATEST_VERSION + 1))
    finally:
        connection.close()


def test_migrations_are_idempotent(tmp_path: Path) -> None:
    connection = _raw_connection(tmp_path / "ow.db")
    try:
        migrate(connection)
        migrate(connection)
        migrate(connection)

        assert current_migration_version(connection) == LATEST_VERSION
        assert _versions(connection) == list(range(LATEST_VERSION + 1))
    finally:
        connection.close()


def test_migrations_create_all_tables_and_indexes(tmp_path: Path) -> None:
    connection = _raw_connection(tmp_path / "ow.db")
    try:
        migrate(connection)

        assert _schema_names(connection, "table") >= TABLES
        assert _schema_names(connection, "index") >= INDEXES
    finally:
        connection.close()


def test_empty_migrations_table_counts_as_no_version(tmp_path: Path) -> None:
    connection = _raw_connection(tmp_path / "ow.db")
    try:
        connection.execute(
            'CREATE TABLE "openworkflow_migrations" ("version" INTEGER NOT NULL PRIMARY KEY)'
        )
        assert current_migration_version(connection) == -1

        migrate(connection)

        assert current_migration_version(connection) == LATEST_VERSION
        assert _schema_names(connection, "table") >= TABLES
    finally:
        connection.close()


def test_migrations_apply_incrementally(tmp_path: Path) -> None:
    connection = _raw_connection(tmp_path / "ow.db")
    try:
        connection.executescript(migration_scripts()[0])
        assert current_migration_version(connection) == 0
        assert "workflow_runs" not in _schema_names(connection, "table")

        migrate(connection)

        assert current_migration_version(connection) == LATEST_VERSION
        assert _versions(connection) == list(range(LATEST_VERSION + 1))
        assert _schema_names(connection, "table") >= TABLES
    finally:
        connection.close()


async def test_reopening_a_migrated_file_keeps_its_data(tmp_path: Path) -> None:
    path = str(tmp_path / "ow.db")
    first = SqliteBackend(path, namespace_id="ns")
    created = await create_pending_run(first)
    await first.stop()

    second = SqliteBackend(path, namespace_id="ns")
    try:
        assert await get_run(second, created.id) == created
        assert await _sql(second, 'SELECT COUNT(*) FROM "openworkflow_migrations"') == [
            (LATEST_VERSION + 1,)
        ]
    finally:
        await second.stop()


async def test_run_migrations_false_leaves_the_database_empty(tmp_path: Path) -> None:
    backend = SqliteBackend(str(tmp_path / "ow.db"), run_migrations=False)
    try:
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await create_pending_run(backend)
    finally:
        await backend.stop()


# -- transactions ---------------------------------------------------------------------


async def test_keyed_create_rolls_back_and_raises_the_original_error(
    sqlite: SqliteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Creates share one transaction (a group commit), each run in a savepoint
    # of its own: a run failing after its insert (here, writing its tags) is
    # undone alone, its caller gets the original error, and the others commit.
    real_insert_tags = sqlite_run_batches.insert_run_tags

    def insert_tags(c: sqlite3.Connection, ns: str, run_id: str, at: str, tags: Any) -> None:
        if "fail" in tags:
            raise RuntimeError("insert failed")
        real_insert_tags(c, ns, run_id, at, tags)

    key = new_id()
    monkeypatch.setattr(sqlite_run_batches, "insert_run_tags", insert_tags)
    failing, kept = await asyncio.gather(
        create_pending_run(sqlite, workflow_name="wf", idempotency_key=key, tags={"fail": "1"}),
        create_pending_run(sqlite, workflow_name="wf", tags={"ok": "1"}),
        return_exceptions=True,
    )

    assert isinstance(failing, RuntimeError) and str(failing) == "insert failed"
    assert not isinstance(kept, BaseException)
    assert await _sql(sqlite, 'SELECT "id" FROM "workflow_runs"') == [(kept.id,)]
    assert await _sql(sqlite, 'SELECT "workflow_run_id" FROM "run_tags"') == [(kept.id,)]
    # The connection is out of the transaction, and the key is still free.
    assert await sqlite._db.run(lambda c: c.in_transaction) is False
    created = await create_pending_run(sqlite, workflow_name="wf", idempotency_key=key)
    assert created.idempotency_key == key and created.id != kept.id


async def test_keyed_create_with_a_dangling_parent_rolls_back(sqlite: SqliteBackend) -> None:
    key = new_id()

    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY constraint failed"):
        await create_pending_run(
            sqlite,
            idempotency_key=key,
            parent_step_attempt_namespace_id=sqlite.namespace_id,
            parent_step_attempt_id=new_id(),
        )

    assert await _sql(sqlite, 'SELECT COUNT(*) FROM "workflow_runs"') == [(0,)]
    assert await sqlite._db.run(lambda c: c.in_transaction) is False
    assert (await create_pending_run(sqlite, idempotency_key=key)).idempotency_key == key


class _FakeConnection:
    """Records statements; fails the ones it is told to."""

    def __init__(self, failures: dict[str, BaseException]) -> None:
        self.failures = failures
        self.calls: list[str] = []

    def execute(self, sql: str, *args: object) -> None:
        self.calls.append(sql)
        if sql in self.failures:
            raise self.failures[sql]


def test_transaction_begin_failure_propagates_without_running_the_body() -> None:
    connection = _FakeConnection({"BEGIN IMMEDIATE": sqlite3.OperationalError("busy")})
    body_calls: list[int] = []

    with pytest.raises(sqlite3.OperationalError, match="busy"):
        _transaction(connection, lambda: body_calls.append(1))  # type: ignore[arg-type]

    assert body_calls == []
    assert connection.calls == ["BEGIN IMMEDIATE"]


def test_transaction_swallows_rollback_errors_and_keeps_the_original() -> None:
    connection = _FakeConnection({"ROLLBACK": sqlite3.OperationalError("cannot rollback")})

    def body() -> None:
        raise ValueError("original")

    with pytest.raises(ValueError, match="original"):
        _transaction(connection, body)  # type: ignore[arg-type]

    assert connection.calls == ["BEGIN IMMEDIATE", "ROLLBACK"]


async def test_send_signal_error_rolls_back_and_reraises(
    sqlite: SqliteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    signal = f"rollback-{new_id()}"
    run, _ = await create_parked_signal_waiter(sqlite, signal)
    parked_until = (await get_run(sqlite, run.id)).available_at

    monkeypatch.setattr(queries, "WAKE_SIGNALED_RUN", "SELECT * FROM no_such_table WHERE ?")
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await sqlite.send_signal(SendSignalParams(signal=signal, data={"lost": True}))
    monkeypatch.undo()

    assert await _sql(sqlite, 'SELECT COUNT(*) FROM "workflow_signals"') == [(0,)]
    assert (await get_run(sqlite, run.id)).available_at == parked_until
    assert await sqlite._db.run(lambda c: c.in_transaction) is False

    result = await sqlite.send_signal(SendSignalParams(signal=signal, data={"kept": True}))
    assert result.workflow_run_ids == [run.id]


async def test_link_child_uses_returning_instead_of_a_reload(
    sqlite: SqliteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = await create_claimed_run(sqlite, lease_ms=60_000)
    assert parent.worker_id is not None
    step = await create_step(sqlite, parent, kind="workflow")
    child = await create_pending_run(
        sqlite, parent_step_attempt_namespace_id=step.namespace_id, parent_step_attempt_id=step.id
    )

    async def no_reload(params: GetStepAttemptParams) -> None:
        raise AssertionError("set_step_attempt_child_workflow_run must not re-read the attempt")

    monkeypatch.setattr(sqlite, "get_step_attempt", no_reload)
    linked = await sqlite.set_step_attempt_child_workflow_run(
        SetStepAttemptChildWorkflowRunParams(
            workflow_run_id=parent.id,
            step_attempt_id=step.id,
            worker_id=parent.worker_id,
            child_workflow_run_namespace_id=child.namespace_id,
            child_workflow_run_id=child.id,
        )
    )

    assert linked.id == step.id
    assert linked.child_workflow_run_id == child.id


# -- legacy statuses and odd rows -----------------------------------------------------


async def test_legacy_sleeping_run_with_a_past_time_is_claimable(sqlite: SqliteBackend) -> None:
    run = await create_pending_run(sqlite, workflow_name="legacy-sleeping-claim")
    past = clock_module.to_iso(now() - timedelta(seconds=1))
    await _set_run(sqlite, run.id, status="sleeping", worker_id=None, available_at=past)

    worker_id = new_id()
    claimed = await claim(sqlite, worker_id, lease_ms=60_000)

    assert claimed is not None
    assert claimed.id == run.id
    assert claimed.status == "running"
    assert claimed.worker_id == worker_id
    assert claimed.attempts == 1


async def test_legacy_sleeping_run_with_a_future_time_waits(sqlite: SqliteBackend) -> None:
    run = await create_pending_run(sqlite)
    future = clock_module.to_iso(now() + timedelta(minutes=5))
    await _set_run(sqlite, run.id, status="sleeping", worker_id=None, available_at=future)

    assert await claim(sqlite) is None
    assert (await get_run(sqlite, run.id)).status == "sleeping"


async def test_legacy_sleeping_run_can_be_canceled(sqlite: SqliteBackend) -> None:
    run = await create_pending_run(sqlite)
    await _set_run(sqlite, run.id, status="sleeping", worker_id=None)

    canceled = await sqlite.cancel_workflow_run(CancelWorkflowRunParams(workflow_run_id=run.id))

    assert canceled.status == "canceled"
    assert canceled.available_at is None


async def test_legacy_succeeded_run_cannot_be_canceled(sqlite: SqliteBackend) -> None:
    run = await create_pending_run(sqlite)
    await _set_run(sqlite, run.id, status="succeeded")

    with pytest.raises(
        InvalidRunStateError,
        match=re.escape(f"Cannot cancel workflow run {run.id} with status succeeded"),
    ):
        await sqlite.cancel_workflow_run(CancelWorkflowRunParams(workflow_run_id=run.id))


async def test_cancel_of_an_unknown_status_raises_the_generic_error(sqlite: SqliteBackend) -> None:
    run = await create_pending_run(sqlite)
    await _set_run(sqlite, run.id, status="paused")

    with pytest.raises(InvalidRunStateError, match=r"^Failed to cancel workflow run$"):
        await sqlite.cancel_workflow_run(CancelWorkflowRunParams(workflow_run_id=run.id))

    assert (await get_run(sqlite, run.id)).status == "paused"


async def test_counts_fold_legacy_statuses_and_ignore_unknown_ones(sqlite: SqliteBackend) -> None:
    for status in ("sleeping", "succeeded", "paused", "running", "pending"):
        run = await create_pending_run(sqlite, available_at=now() + timedelta(days=1))
        await _set_run(sqlite, run.id, status=status)

    counts = await sqlite.count_workflow_runs()

    assert (counts.pending, counts.running, counts.completed, counts.failed, counts.canceled) == (
        1,
        2,
        1,
        0,
        0,
    )


async def test_sleep_overwrites_a_stale_past_available_at_set_directly(
    sqlite: SqliteBackend,
) -> None:
    run = await create_claimed_run(sqlite, lease_ms=60_000)
    past = clock_module.to_iso(now() - timedelta(seconds=1))
    await _set_run(sqlite, run.id, available_at=past, updated_at=past)
    resume_at = now() + timedelta(days=7)

    parked = await park(sqlite, run, resume_at)

    assert parked.available_at == resume_at
    assert parked.worker_id is None


# -- storage format (shared with the TypeScript original) --------------------------------


async def test_rows_use_iso_millisecond_timestamps_and_json_text(sqlite: SqliteBackend) -> None:
    run = await create_claimed_run(sqlite, lease_ms=60_000, input={"UPPER_KEY": [1, "x"]})

    rows = await _sql(
        sqlite,
        'SELECT "created_at", "updated_at", "available_at", "started_at", "config", "input", '
        '"context", "output" FROM "workflow_runs" WHERE "id" = ?',
        run.id,
    )

    created_at, updated_at, available_at, started_at, config, input_, context, output = rows[0]
    for stamp in (created_at, updated_at, available_at, started_at):
        assert ISO_MS.match(stamp), stamp
    assert config == "{}"
    assert input_ == '{"UPPER_KEY":[1,"x"]}'
    assert context is None  # SQL NULL, not the JSON text "null"
    assert output is None


async def test_frozen_clock_produces_real_created_at_ties(
    sqlite: SqliteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen = now()
    monkeypatch.setattr(clock_module, "now", lambda: frozen)
    runs = [await create_pending_run(sqlite) for _ in range(5)]
    assert {run.created_at for run in runs} == {frozen}
    expected = sorted((run.id for run in runs), reverse=True)

    collected: list[str] = []
    cursor = None
    while True:
        page = await sqlite.list_workflow_runs(ListWorkflowRunsParams(limit=2, after=cursor))
        collected += [run.id for run in page.data]
        if page.next is None:
            break
        cursor = page.next

    assert collected == expected


# -- several connections on one file (several processes) -------------------------------


@pytest.fixture
async def two_connections(tmp_path: Path) -> AsyncIterator[tuple[SqliteBackend, SqliteBackend]]:
    """Two backends with their own connections to one file, in one namespace."""
    path = str(tmp_path / "shared.db")
    first = SqliteBackend(path, namespace_id="shared")
    second = SqliteBackend(path, namespace_id="shared")
    yield first, second
    await first.stop()
    await second.stop()


async def test_keyed_creates_from_two_connections_collapse_to_one_run(
    two_connections: tuple[SqliteBackend, SqliteBackend],
) -> None:
    first, second = two_connections
    key, name = new_id(), new_id()

    runs = await asyncio.gather(
        *(
            (first, second)[i % 2].create_workflow_run(
                CreateWorkflowRunParams(workflow_name=name, idempotency_key=key, input={"i": i})
            )
            for i in range(10)
        )
    )

    assert len({run.id for run in runs}) == 1


async def test_claims_from_two_connections_never_share_a_run(
    two_connections: tuple[SqliteBackend, SqliteBackend],
) -> None:
    first, second = two_connections
    created = {(await create_pending_run(first)).id for _ in range(6)}

    claims = await asyncio.gather(
        *(claim((first, second)[i % 2], lease_ms=60_000) for i in range(8))
    )

    claimed_ids = [run.id for run in claims if run is not None]
    assert sorted(claimed_ids) == sorted(created)
    assert claims.count(None) == 2


async def test_concurrent_step_writes_and_completions_share_transactions(tmp_path: Path) -> None:
    """Group commit: concurrent executions' writes go to the database thread together."""
    backend = SqliteBackend(str(tmp_path / "group.db"))
    try:
        runs = [await create_claimed_run(backend) for _ in range(20)]
        trips = 0
        run_on_thread = backend._db.run

        async def counting(fn: Any) -> Any:
            nonlocal trips
            trips += 1
            return await run_on_thread(fn)

        backend._db.run = counting  # type: ignore[method-assign]
        await asyncio.gather(
            *(
                backend.create_completed_step_attempt(
                    CreateCompletedStepAttemptParams(
                        workflow_run_id=run.id,
                        worker_id=run.worker_id or "",
                        step_name="s",
                        kind="function",
                        output=i,
                    )
                )
                for i, run in enumerate(runs)
            )
        )
        completed = await asyncio.gather(
            *(
                backend.complete_workflow_run(
                    CompleteWorkflowRunParams(
                        workflow_run_id=run.id, worker_id=run.worker_id or "", output=i
                    )
                )
                for i, run in enumerate(runs)
            )
        )
        assert trips < 20, trips
        assert [run.output for run in completed] == list(range(20))
        for i, run in enumerate(runs):
            assert [step.output for step in await list_steps(backend, run.id)] == [i]
    finally:
        await backend.stop()
