"""Flow control in storage: routing in the claim, pause, priority, unrouted runs, migrations.

Every backend, through the ``Backend`` protocol; raw SQL only where a test
plays the TypeScript original (rows that never name ``priority``) or an
older database.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from openworkflow.core import clock as clock_module
from openworkflow.core.backend import (
    ClaimUnroutedWorkflowRunsParams,
    ClaimWorkflowRunsParams,
    CompleteWorkflowRunParams,
    ExtendWorkflowRunLeaseParams,
    SetWorkflowRunPriorityParams,
    WorkerRegistration,
    WorkflowKey,
)
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import InvalidRunStateError, WorkflowRunNotFoundError
from openworkflow.postgres import PostgresBackend
from openworkflow.postgres import schema as pg_schema
from openworkflow.sqlite import SqliteBackend
from openworkflow.sqlite import schema as sqlite_schema
from tests.backend.helpers import create_pending_run, get_run, new_id, now, park
from tests.fixtures.postgres import prepare_server

LEASE_MS = 60_000


async def claim_runs(
    backend: Any, slots: int = 1, workflows: Sequence[WorkflowKey] | None = None
) -> list[WorkflowRun]:
    """Claim up to ``slots`` runs, routed to ``workflows`` (None: any workflow)."""
    return await backend.claim_workflow_runs(
        ClaimWorkflowRunsParams(
            worker_ids=[new_id() for _ in range(slots)],
            lease_duration_ms=LEASE_MS,
            workflows=workflows,
        )
    )


async def claim_unrouted(
    backend: Any, slots: int = 10, scan_limit: int = 1000
) -> list[WorkflowRun]:
    """Claim up to ``slots`` runs no live worker registered for."""
    return await backend.claim_unrouted_workflow_runs(
        ClaimUnroutedWorkflowRunsParams(
            worker_ids=[new_id() for _ in range(slots)],
            lease_duration_ms=LEASE_MS,
            scan_limit=scan_limit,
        )
    )


async def register(backend: Any, workflows: list[WorkflowKey], ttl_ms: int = 60_000) -> str:
    """Register a new live worker running ``workflows``; return its id."""
    worker_id = new_id()
    await backend.register_worker(
        WorkerRegistration(worker_id=worker_id, workflows=workflows, ttl_ms=ttl_ms)
    )
    return worker_id


def ids(runs: Sequence[WorkflowRun]) -> set[str]:
    """The ids of ``runs``."""
    return {run.id for run in runs}


async def runs_in_every_claimable_state(backend: Any, clock: Any, workflow_name: str) -> set[str]:
    """A run whose lease expired, a parked run now due, and a pending run, of one workflow."""
    await create_pending_run(backend, workflow_name=workflow_name)
    [leased] = await backend.claim_workflow_runs(
        ClaimWorkflowRunsParams(worker_ids=[new_id()], lease_duration_ms=100)
    )
    await create_pending_run(backend, workflow_name=workflow_name)
    [parked] = await claim_runs(backend, 1)
    await park(backend, parked, now())
    pending = await create_pending_run(backend, workflow_name=workflow_name)
    clock.advance(timedelta(seconds=1))
    return {leased.id, parked.id, pending.id}


async def execute_sql(backend: Any, statement: str, *params: Any) -> None:
    """Run one raw statement (``?`` placeholders, ``{runs}`` for the runs table).

    Plays another client of the database: the TypeScript original.
    """
    if isinstance(backend, SqliteBackend):
        text = statement.format(runs='"workflow_runs"')
        await backend._run(lambda c: c.execute(text, params))
        return
    query = sql.SQL(statement.replace("?", "%s")).format(
        runs=sql.Identifier(backend.schema, "workflow_runs")
    )
    async with await psycopg.AsyncConnection.connect(prepare_server(), autocommit=True) as c:
        await c.execute(query, params)


async def insert_typescript_run(backend: Any, workflow_name: str) -> str:
    """Insert a pending run as the TypeScript original does: ``priority`` never named."""
    run_id = new_id()
    at: Any = now()
    config: Any = Jsonb({})
    if isinstance(backend, SqliteBackend):
        at, config = clock_module.to_iso(at), "{}"
    await execute_sql(
        backend,
        'INSERT INTO {runs} ("namespace_id", "id", "workflow_name", "status", "config", '
        '"attempts", "available_at", "created_at", "updated_at") '
        "VALUES (?, ?, ?, 'pending', ?, 0, ?, ?, ?)",
        backend.namespace_id,
        run_id,
        workflow_name,
        config,
        at,
        at,
        at,
    )
    return run_id


# -- routing ----------------------------------------------------------------------------


async def test_workers_with_disjoint_workflows_claim_only_their_own_runs(backend) -> None:
    mine = [await create_pending_run(backend, workflow_name="mine") for _ in range(5)]
    theirs = [
        await create_pending_run(backend, workflow_name="theirs", version="v1") for _ in range(5)
    ]
    stranger = await create_pending_run(backend, workflow_name="stranger")

    claimed_mine = await claim_runs(backend, 10, [("mine", None)])
    claimed_theirs = await claim_runs(backend, 10, [("theirs", "v1")])

    assert ids(claimed_mine) == ids(mine)
    assert ids(claimed_theirs) == ids(theirs)
    assert (await get_run(backend, stranger.id)).status == "pending"
    assert await claim_runs(backend, 10, [("mine", None), ("theirs", "v1")]) == []


async def test_a_none_version_matches_only_unversioned_runs(backend) -> None:
    unversioned = await create_pending_run(backend, workflow_name="doc")
    v1 = await create_pending_run(backend, workflow_name="doc", version="v1")
    v2 = await create_pending_run(backend, workflow_name="doc", version="v2")

    assert ids(await claim_runs(backend, 5, [("doc", None)])) == {unversioned.id}
    assert ids(await claim_runs(backend, 5, [("doc", "v1")])) == {v1.id}
    assert await claim_runs(backend, 5, [("doc", "v3")]) == []
    assert ids(await claim_runs(backend, 5, [("doc", "v2"), ("doc", "v1")])) == {v2.id}


async def test_a_worker_finds_its_rare_runs_behind_a_backlog_of_others(backend) -> None:
    # More than the front of the queue a routed claim looks at first, so the
    # claim must look up the worker's workflows themselves.
    for _ in range(150):
        await create_pending_run(backend, workflow_name="bulk")
    low = await create_pending_run(backend, workflow_name="rare")
    high = await create_pending_run(backend, workflow_name="rare-too", version="v1", priority=3)

    claimed = await claim_runs(backend, 1, [("rare", None), ("rare-too", "v1")])
    assert [run.id for run in claimed] == [high.id]
    assert [run.id for run in await claim_runs(backend, 3, [("rare", None)])] == [low.id]


async def test_an_empty_workflow_list_claims_nothing(backend) -> None:
    await create_pending_run(backend)

    assert await claim_runs(backend, 3, []) == []
    assert len(await claim_runs(backend, 3, None)) == 1


async def test_routing_also_holds_for_expired_leases_and_due_parked_runs(backend, clock) -> None:
    runs = await runs_in_every_claimable_state(backend, clock, "a")

    assert await claim_runs(backend, 5, [("b", None)]) == []
    reclaimed = await claim_runs(backend, 5, [("a", None)])

    assert ids(reclaimed) == runs
    assert sorted(run.lease_expired for run in reclaimed) == [False, False, True]


# -- pause ------------------------------------------------------------------------------


async def test_a_paused_workflow_is_never_claimed_until_resumed(backend, clock) -> None:
    paused_ids = await runs_in_every_claimable_state(backend, clock, "paused")
    other = await create_pending_run(backend, workflow_name="other")
    paused = await backend.pause_workflow("paused")
    assert paused.workflow_name == "paused"

    assert ids(await claim_runs(backend, 10)) == {other.id}
    assert await claim_runs(backend, 10, [("paused", None)]) == []
    assert await claim_unrouted(backend) == []

    assert await backend.resume_workflow("paused") is True
    assert ids(await claim_runs(backend, 10, [("paused", None)])) == paused_ids


async def test_pausing_is_idempotent_listed_by_name_and_per_namespace(
    backend, make_backend
) -> None:
    first = await backend.pause_workflow("zeta")
    again = await backend.pause_workflow("zeta")
    await backend.pause_workflow("alpha")

    assert again.paused_at == first.paused_at
    assert [p.workflow_name for p in await backend.list_paused_workflows()] == ["alpha", "zeta"]
    assert abs((first.paused_at - now()).total_seconds()) < 5

    other_namespace = make_backend(new_id())
    assert await other_namespace.list_paused_workflows() == []
    run = await create_pending_run(other_namespace, workflow_name="zeta")
    assert ids(await claim_runs(other_namespace, 1)) == {run.id}

    assert await backend.resume_workflow("zeta") is True
    assert await backend.resume_workflow("zeta") is False
    assert [p.workflow_name for p in await backend.list_paused_workflows()] == ["alpha"]


async def test_a_pass_in_flight_when_paused_finishes(backend) -> None:
    await create_pending_run(backend, workflow_name="busy")
    [run] = await claim_runs(backend, 1)
    await backend.pause_workflow("busy")
    assert run.worker_id is not None

    await backend.extend_workflow_run_lease(
        ExtendWorkflowRunLeaseParams(
            workflow_run_id=run.id, worker_id=run.worker_id, lease_duration_ms=LEASE_MS
        )
    )
    done = await backend.complete_workflow_run(
        CompleteWorkflowRunParams(workflow_run_id=run.id, worker_id=run.worker_id, output=1)
    )
    assert done.status == "completed"


# -- priority ---------------------------------------------------------------------------


@pytest.mark.parametrize("routed", [False, True], ids=["any", "routed"])
async def test_pending_runs_are_claimed_highest_priority_first(backend, routed: bool) -> None:
    workflows = [("job", None)] if routed else None
    runs = {
        name: await create_pending_run(backend, workflow_name="job", priority=priority)
        for name, priority in [
            ("zero", 0),
            ("five", 5),
            ("minus", -1),
            ("five-later", 5),
            ("one", 1),
        ]
    }
    assert runs["five"].priority == 5
    assert (await get_run(backend, runs["minus"].id)).priority == -1

    order = [(await claim_runs(backend, 1, workflows))[0].id for _ in runs]

    expected = ["five", "five-later", "one", "zero", "minus"]
    assert order == [runs[name].id for name in expected]


@pytest.mark.parametrize("limited", [False, True], ids=["free", "concurrency-keyed"])
@pytest.mark.parametrize("routed", [False, True], ids=["any", "routed"])
async def test_one_claim_of_many_slots_takes_the_due_runs_by_priority_then_due_time(
    backend, routed: bool, limited: bool
) -> None:
    # The claim walks the pending runs one priority level at a time: a run of a
    # higher level that is not due yet must neither be taken nor stop the walk.
    workflows = [("job", None)] if routed else None
    keys = iter(f"key-{n}" for n in range(10))

    async def pending(priority: int, due_in: timedelta = timedelta(0)) -> str:
        extra = {"concurrency_key": next(keys), "concurrency_limit": 1} if limited else {}
        run = await create_pending_run(
            backend,
            workflow_name="job",
            priority=priority,
            available_at=now() + due_in if due_in else None,
            **extra,
        )
        return run.id

    later_high = await pending(9, timedelta(hours=1))
    due = [await pending(priority) for priority in (0, -2, 5, 1)]
    later_zero = await pending(0, timedelta(hours=1))
    older_five = due[2]
    newer_five = await pending(5)

    claimed = [run.id for run in await claim_runs(backend, 10, workflows)]

    assert claimed == [older_five, newer_five, due[3], due[0], due[1]]
    assert later_high not in claimed and later_zero not in claimed


async def test_set_priority_reorders_a_queued_run(backend) -> None:
    first = await create_pending_run(backend)
    second = await create_pending_run(backend)

    changed = await backend.set_workflow_run_priority(
        SetWorkflowRunPriorityParams(workflow_run_id=second.id, priority=10)
    )

    assert changed.id == second.id and changed.priority == 10
    assert (await get_run(backend, second.id)).priority == 10
    assert [run.id for run in await claim_runs(backend, 2)] == [second.id, first.id]


async def test_set_priority_on_a_running_run_works_and_on_a_finished_one_fails(backend) -> None:
    await create_pending_run(backend)
    [run] = await claim_runs(backend, 1)
    assert run.worker_id is not None

    running = await backend.set_workflow_run_priority(
        SetWorkflowRunPriorityParams(workflow_run_id=run.id, priority=-3)
    )
    assert running.status == "running" and running.priority == -3

    await backend.complete_workflow_run(
        CompleteWorkflowRunParams(workflow_run_id=run.id, worker_id=run.worker_id, output=None)
    )
    with pytest.raises(InvalidRunStateError):
        await backend.set_workflow_run_priority(
            SetWorkflowRunPriorityParams(workflow_run_id=run.id, priority=1)
        )
    with pytest.raises(WorkflowRunNotFoundError):
        await backend.set_workflow_run_priority(
            SetWorkflowRunPriorityParams(workflow_run_id=new_id(), priority=1)
        )


@pytest.mark.parametrize("routed", [False, True], ids=["any", "routed"])
async def test_rows_without_a_priority_rank_as_priority_zero(backend, routed: bool) -> None:
    workflows = [("job", None)] if routed else None
    typescript = await insert_typescript_run(backend, "job")
    null_priority = (await create_pending_run(backend, workflow_name="job")).id
    await execute_sql(backend, 'UPDATE {runs} SET "priority" = NULL WHERE "id" = ?', null_priority)
    high = (await create_pending_run(backend, workflow_name="job", priority=1)).id
    low = (await create_pending_run(backend, workflow_name="job", priority=-1)).id

    assert (await get_run(backend, typescript)).priority == 0
    assert (await get_run(backend, null_priority)).priority == 0
    order = [(await claim_runs(backend, 1, workflows))[0].id for _ in range(4)]

    assert order == [high, typescript, null_priority, low]


# -- runs no live worker knows -----------------------------------------------------------


async def test_claim_unrouted_takes_only_runs_no_live_worker_registered(backend, clock) -> None:
    known = await create_pending_run(backend, workflow_name="known")
    other_version = await create_pending_run(backend, workflow_name="known", version="v2")
    unknown = await create_pending_run(backend, workflow_name="unknown")
    forgotten = await create_pending_run(backend, workflow_name="forgotten")
    paused = await create_pending_run(backend, workflow_name="paused")
    await backend.pause_workflow("paused")
    await register(backend, [("known", None), ("x", "v1")], ttl_ms=60_000)
    await register(backend, [("forgotten", None)], ttl_ms=500)
    clock.advance(timedelta(seconds=1))  # the second registration expires

    claimed = await claim_unrouted(backend)

    assert ids(claimed) == {other_version.id, unknown.id, forgotten.id}
    assert len({run.worker_id for run in claimed}) == 3
    assert all(run.status == "running" and run.attempts == 1 for run in claimed)
    assert (await get_run(backend, known.id)).status == "pending"
    assert (await get_run(backend, paused.id)).status == "pending"


async def test_registrations_are_refreshed_replaced_and_removed(backend) -> None:
    run = await create_pending_run(backend, workflow_name="report")
    worker_id = await register(backend, [("report", None)])
    assert await claim_unrouted(backend) == []

    await backend.register_worker(
        WorkerRegistration(worker_id=worker_id, workflows=[("email", None)], ttl_ms=60_000)
    )
    assert ids(await claim_unrouted(backend)) == {run.id}

    second = await create_pending_run(backend, workflow_name="email")
    await backend.unregister_worker(worker_id)
    await backend.unregister_worker(worker_id)
    assert ids(await claim_unrouted(backend)) == {second.id}


async def test_claim_unrouted_looks_only_at_the_oldest_due_runs(backend) -> None:
    await register(backend, [("known", None)])
    for _ in range(3):
        await create_pending_run(backend, workflow_name="known")
    unknown = [await create_pending_run(backend, workflow_name="unknown") for _ in range(3)]

    assert await claim_unrouted(backend, scan_limit=3) == []
    claimed = await claim_unrouted(backend, slots=2, scan_limit=10)

    assert [run.id for run in claimed] == [unknown[0].id, unknown[1].id]


async def test_claim_unrouted_takes_parked_runs_that_are_due(backend, clock) -> None:
    runs = await runs_in_every_claimable_state(backend, clock, "orphan")

    first = await claim_unrouted(backend, scan_limit=1)
    rest = await claim_unrouted(backend)

    assert len(first) == 1
    assert ids(first) | ids(rest) == runs


# -- races ------------------------------------------------------------------------------


async def test_racing_routed_and_unrouted_claims_never_share_a_run(backend) -> None:
    await register(backend, [("red", None), ("blue", "v1")])
    for index in range(20):
        await create_pending_run(backend, workflow_name="red", priority=index % 3)
        await create_pending_run(backend, workflow_name="blue", version="v1")
    strays = {(await create_pending_run(backend, workflow_name="stray")).id for _ in range(4)}

    results = await asyncio.gather(
        *(claim_runs(backend, 4, [("red", None)]) for _ in range(4)),
        *(claim_runs(backend, 4, [("blue", "v1")]) for _ in range(4)),
        claim_unrouted(backend, slots=3),
        claim_unrouted(backend, slots=3),
    )

    claimed = [run for runs in results for run in runs]
    assert len(claimed) == len(ids(claimed)), "a run was claimed twice"
    assert all(run.workflow_name == "red" for runs in results[:4] for run in runs)
    assert all(run.workflow_name == "blue" for runs in results[4:8] for run in runs)
    assert ids(results[8]) | ids(results[9]) <= strays


async def test_racing_claims_of_rare_workflows_never_share_a_run(backend) -> None:
    for _ in range(100):
        await create_pending_run(backend, workflow_name="bulk")
    rare = {(await create_pending_run(backend, workflow_name="rare")).id for _ in range(12)}

    results = await asyncio.gather(*(claim_runs(backend, 4, [("rare", None)]) for _ in range(4)))

    claimed = [run for runs in results for run in runs]
    assert len(claimed) == len(ids(claimed)), "a run was claimed twice"
    assert ids(claimed) <= rare


# -- migrations -------------------------------------------------------------------------


async def test_a_database_of_the_original_gets_this_ports_storage_in_its_own_ledger(
    backend_kind: str, tmp_path: Path
) -> None:
    if backend_kind == "sqlite_memory":
        pytest.skip("an in-memory database cannot be migrated by another client first")
    if backend_kind == "postgres":
        await _check_postgres_upgrade()
    else:
        await _check_sqlite_upgrade(tmp_path / "original.db")


async def _check_sqlite_upgrade(path: Path) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    for script in sqlite_schema.migration_scripts():
        connection.executescript(script)
    stamp = clock_module.to_iso(now())
    connection.execute(
        'INSERT INTO "workflow_runs" ("namespace_id", "id", "workflow_name", "status", "config", '
        '"attempts", "available_at", "created_at", "updated_at") '
        "VALUES ('default', 'ts-run', 'job', 'pending', '{}', 0, ?, ?, ?)",
        (stamp, stamp, stamp),
    )
    connection.close()

    # Several processes upgrading at once take turns, and reopening changes nothing.
    for opening in (4, 1):
        backends = await asyncio.gather(
            *(asyncio.to_thread(SqliteBackend, str(path)) for _ in range(opening))
        )
        try:
            assert (await get_run(backends[0], "ts-run")).priority == 0
            latest = len(sqlite_schema.migration_scripts()) - 1
            assert await backends[0].migration_version() == latest
        finally:
            await asyncio.gather(*(backend.stop() for backend in backends))

    connection = sqlite3.connect(path)
    original = connection.execute('SELECT "version" FROM "openworkflow_migrations"').fetchall()
    ours = connection.execute(
        'SELECT "version", "name" FROM "openworkflow_python_migrations" ORDER BY 1'
    ).fetchall()
    connection.close()
    assert sorted(row[0] for row in original) == list(range(6))
    assert ours == _expected_python_ledger()


def _expected_python_ledger() -> list[tuple[int, str]]:
    return [
        (0, "0000_active_deadline_index"),
        (1, "0001_flow_control"),
        (2, "0002_schedules"),
        (3, "0003_rate_limits"),
        (4, "0004_concurrency"),
        (5, "0005_start_rate_limits"),
        (6, "0006_continue_as_new"),
        (7, "0007_run_messages"),
        (8, "0008_run_events"),
        (9, "0009_run_streams"),
        (10, "0010_run_tags"),
        (11, "0011_run_forks"),
    ]


async def _check_postgres_upgrade() -> None:
    url = prepare_server()
    schema = f"ow_flow_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        try:
            for script in pg_schema.migration_scripts(schema):
                await admin.execute(script.encode())
            await admin.execute(
                sql.SQL(
                    'INSERT INTO {} ("namespace_id", "id", "workflow_name", "status", "config", '
                    '"attempts", "available_at", "created_at", "updated_at") '
                    "VALUES ('default', 'ts-run', 'job', 'pending', '{{}}', 0, NOW(), NOW(), NOW())"
                ).format(sql.Identifier(schema, "workflow_runs"))
            )
            # Several workers upgrading at once take turns.
            backends = [PostgresBackend(url, schema=schema) for _ in range(4)]
            try:
                await asyncio.gather(*(backend.open() for backend in backends))
                assert (await get_run(backends[0], "ts-run")).priority == 0
                assert await backends[0].migration_version() == 5
            finally:
                await asyncio.gather(*(backend.stop() for backend in backends))
            await _check_postgres_ledgers(admin, schema)
        finally:
            await pg_schema.drop_schema(admin, schema)


async def _check_postgres_ledgers(admin: psycopg.AsyncConnection[Any], schema: str) -> None:
    cursor = await admin.execute(
        sql.SQL('SELECT "version" FROM {} ORDER BY 1').format(
            sql.Identifier(schema, "openworkflow_migrations")
        )
    )
    assert [row[0] for row in await cursor.fetchall()] == list(range(6))
    cursor = await admin.execute(
        sql.SQL('SELECT "version", "name" FROM {} ORDER BY 1').format(
            sql.Identifier(schema, "openworkflow_python_migrations")
        )
    )
    assert [tuple(row) for row in await cursor.fetchall()] == _expected_python_ledger()
