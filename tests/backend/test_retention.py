"""Retention: prune_workflow_runs / count_prunable_workflow_runs on every backend.

Only finished runs past their cutoff go; never a pending, running or parked
run, a run whose parent is active, or one with an active child. A run's step
attempts, signals, messages, events and streams go with it; counts stay right;
pruners running at once delete (and count) each run once.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from openworkflow.core.backend import (
    CancelWorkflowRunParams,
    CompleteWorkflowRunParams,
    FailWorkflowRunParams,
    GetStepAttemptParams,
    GetWorkflowRunParams,
    ListStepAttemptsParams,
    SendSignalParams,
)
from openworkflow.core.events import SetRunEventParams
from openworkflow.core.messages import SendRunMessageParams, TakeRunMessageParams
from openworkflow.core.retention import PruneWorkflowRunsParams
from openworkflow.core.streams import AppendRunStreamParams
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.postgres import PostgresBackend
from openworkflow.retention import prune_runs
from openworkflow.sqlite import SqliteBackend
from tests.backend.helpers import (
    TERMINAL_RETRY_POLICY,
    create_claimed_run,
    create_linked_child,
    create_parked_signal_waiter,
    create_pending_run,
    create_signal_wait,
    create_step,
    get_run,
    in_one_year,
    new_id,
    now,
)
from tests.fixtures.postgres import TEST_SCHEMA, prepare_server
from tests.support.waiting import wait_until

RUN_TABLES = ("step_attempts", "workflow_signals", "run_messages", "run_events", "run_streams")


def soon() -> datetime:
    """A cutoff every run finished so far is before."""
    return now() + timedelta(seconds=5)


def params(status: str = "completed", **fields: Any) -> PruneWorkflowRunsParams:
    fields.setdefault("finished_before", soon())
    return PruneWorkflowRunsParams(status=status, **fields)


async def exists(backend: Any, run_id: str) -> bool:
    return await backend.get_workflow_run(GetWorkflowRunParams(workflow_run_id=run_id)) is not None


async def finish(backend: Any, run: WorkflowRun, status: str) -> WorkflowRun:
    """Finish an owned run as ``status``."""
    assert run.worker_id is not None
    if status == "completed":
        return await backend.complete_workflow_run(  # type: ignore[no-any-return]
            CompleteWorkflowRunParams(workflow_run_id=run.id, worker_id=run.worker_id, output=1)
        )
    if status == "failed":
        return await backend.fail_workflow_run(  # type: ignore[no-any-return]
            FailWorkflowRunParams(
                workflow_run_id=run.id,
                worker_id=run.worker_id,
                error={"message": "boom"},
                retry_policy=TERMINAL_RETRY_POLICY,
            )
        )
    return await backend.cancel_workflow_run(  # type: ignore[no-any-return]
        CancelWorkflowRunParams(workflow_run_id=run.id)
    )


async def finished_run(
    backend: Any, status: str = "completed", *, workflow_name: str | None = None
) -> WorkflowRun:
    """A finished run with a step of each kind of row this port keeps for a run."""
    run = await create_claimed_run(
        backend, lease_ms=60_000, workflow_name=workflow_name or new_id()
    )
    assert run.worker_id is not None
    owner = run.worker_id
    await create_step(backend, run, step_name="work")
    await backend.set_run_event(
        SetRunEventParams(workflow_run_id=run.id, worker_id=owner, key="progress", value=1)
    )
    await backend.append_run_stream(
        AppendRunStreamParams(workflow_run_id=run.id, worker_id=owner, key="log", seq=1, value="a")
    )
    for data in ("taken", "left"):
        await backend.send_run_message(
            SendRunMessageParams(workflow_run_id=run.id, signal="msg", data=data)
        )
    taker = await create_step(backend, run, step_name="take", kind="signal-wait")
    await backend.take_run_message(
        TakeRunMessageParams(
            workflow_run_id=run.id, worker_id=owner, signal="msg", step_attempt_id=taker.id
        )
    )
    signal = new_id()
    await create_signal_wait(backend, run, signal)
    await backend.send_signal(SendSignalParams(signal=signal, data="hi"))
    return await finish(backend, run, status)


async def rows(backend: Any, table: str) -> int:
    """Rows of ``table`` in the backend's namespace (read with the backend's own connection)."""
    ns = backend.namespace_id
    if isinstance(backend, PostgresBackend):
        query = f'SELECT COUNT(*) FROM "{TEST_SCHEMA}"."{table}" WHERE "namespace_id" = %(ns)s'
        row = await backend._fetchone(query.encode(), {"ns": ns})
        assert row is not None
        return int(row[0])
    sql = f'SELECT COUNT(*) FROM "{table}" WHERE "namespace_id" = ?'
    return int(await backend._run(lambda c: c.execute(sql, (ns,)).fetchone()[0]))


async def execute(backend: Any, statement: str) -> None:
    """Run one SQL statement on the backend's tables (schema-qualified on PostgreSQL)."""
    if isinstance(backend, PostgresBackend):
        qualified = statement
        for table in ("workflow_runs", "run_tags", "run_forks"):
            qualified = qualified.replace(f'"{table}"', f'"{TEST_SCHEMA}"."{table}"')
        await backend._fetchall(qualified.encode(), {})
        return
    await backend._run(lambda c: c.execute(statement).fetchall())


async def test_finished_runs_go_with_all_their_rows(backend: Any) -> None:
    runs = [await finished_run(backend, status) for status in ("completed", "failed", "canceled")]
    steps = await backend.list_step_attempts(ListStepAttemptsParams(workflow_run_id=runs[0].id))
    for table in RUN_TABLES:
        assert await rows(backend, table) > 0, f"the setup wrote no {table} row"

    deleted = {
        status: await backend.prune_workflow_runs(params(status))
        for status in ("completed", "failed", "canceled")
    }

    assert deleted == {"completed": 1, "failed": 1, "canceled": 1}
    for run in runs:
        assert not await exists(backend, run.id)
    for table in RUN_TABLES:
        assert await rows(backend, table) == 0, f"{table} rows outlived their run"
    for step in steps.data:
        got = await backend.get_step_attempt(GetStepAttemptParams(step_attempt_id=step.id))
        assert got is None
    counts = await backend.count_workflow_runs()
    assert (counts.completed, counts.failed, counts.canceled) == (0, 0, 0)
    steps_left = await backend.count_step_attempts()  # what /metrics and the dashboard show
    assert (steps_left.running, steps_left.completed, steps_left.failed) == (0, 0, 0)


async def test_tag_and_fork_rows_go_with_their_run(backend: Any) -> None:
    done = await finished_run(backend)
    active = await create_claimed_run(backend)
    stamp = "'2026-01-01T00:00:00.000Z'"
    for run in (done, active):
        await execute(
            backend,
            f"INSERT INTO \"run_tags\" VALUES ('{backend.namespace_id}', '{run.id}', "
            f"'customer', 'c-1', {stamp}) RETURNING 1",
        )
        await execute(
            backend,
            f"INSERT INTO \"run_forks\" VALUES ('{backend.namespace_id}', '{run.id}', "
            f"'{new_id()}', 'work', {stamp}) RETURNING 1",
        )

    assert await backend.prune_workflow_runs(params()) == 1
    assert not await exists(backend, done.id)
    # The active run keeps its rows; the pruned one's are gone.
    assert await rows(backend, "run_tags") == 1
    assert await rows(backend, "run_forks") == 1


async def test_active_runs_are_never_pruned(backend: Any) -> None:
    pending = await create_pending_run(backend, available_at=in_one_year())
    running = await create_claimed_run(backend)
    parked, _ = await create_parked_signal_waiter(backend, new_id())
    done = await finished_run(backend)
    # Even with a finished_at (as a retry by another engine might leave), active is active.
    await execute(
        backend,
        f'UPDATE "workflow_runs" SET "finished_at" = "created_at" '
        f"WHERE \"namespace_id\" = '{backend.namespace_id}' RETURNING 1",
    )

    for status in ("completed", "failed", "canceled"):
        await backend.prune_workflow_runs(params(status))

    assert not await exists(backend, done.id)
    for run in (pending, running, parked):
        assert await exists(backend, run.id), f"active run {run.status} was pruned"
    assert (await get_run(backend, parked.id)).worker_id is None
    counts = await backend.count_workflow_runs()
    assert (counts.pending, counts.running, counts.completed) == (1, 2, 0)


async def test_a_finished_child_of_an_active_parent_is_kept(backend: Any) -> None:
    parent = await create_claimed_run(backend)
    _, child = await create_linked_child(backend, parent)
    # The child runs to its end while the parent still waits for it.
    claimed = await create_claimed_run_of(backend, child)
    await finish(backend, claimed, "completed")

    assert await backend.count_prunable_workflow_runs(params()) == 0
    assert await backend.prune_workflow_runs(params()) == 0
    assert await exists(backend, child.id)

    # Once the parent has finished too, both may go (in one batch).
    await finish(backend, await get_run(backend, parent.id), "canceled")
    assert await backend.prune_workflow_runs(params("completed")) == 1
    assert await backend.prune_workflow_runs(params("canceled")) == 1
    assert not await exists(backend, parent.id)


async def test_a_finished_parent_waits_for_its_active_child(backend: Any) -> None:
    parent = await create_claimed_run(backend)
    _, child = await create_linked_child(backend, parent)
    await finish(backend, parent, "canceled")

    assert await backend.prune_workflow_runs(params("canceled")) == 0
    assert await exists(backend, parent.id)

    # The child finishes (waking nothing: its parent is over), then the parent goes.
    claimed = await create_claimed_run_of(backend, child)
    await finish(backend, claimed, "failed")
    assert await backend.prune_workflow_runs(params("canceled")) == 1
    assert await exists(backend, child.id)
    assert (await get_run(backend, child.id)).parent_step_attempt_id is None
    assert await backend.prune_workflow_runs(params("failed")) == 1


async def finished_pair(backend: Any) -> None:
    """A completed parent and its completed child."""
    parent = await create_claimed_run(backend, lease_ms=60_000)
    _, child = await create_linked_child(backend, parent)
    claimed = await create_claimed_run_of(backend, child)
    await finish(backend, claimed, "completed")
    await finish(backend, await get_run(backend, parent.id), "completed")


async def test_parent_and_child_finished_go_in_one_batch(backend: Any) -> None:
    await finished_pair(backend)

    assert await backend.prune_workflow_runs(params()) == 2
    assert await rows(backend, "step_attempts") == 0


async def test_only_runs_finished_before_the_cutoff(backend: Any) -> None:
    old = await finished_run(backend)
    await asyncio.sleep(0.1)
    cutoff = now()
    await asyncio.sleep(0.1)
    young = await finished_run(backend)

    assert await backend.count_prunable_workflow_runs(params(finished_before=cutoff)) == 1
    assert await backend.prune_workflow_runs(params(finished_before=cutoff)) == 1
    assert not await exists(backend, old.id)
    assert await exists(backend, young.id)


async def test_status_and_workflow_filters(backend: Any) -> None:
    name = new_id()
    mine = await finished_run(backend, workflow_name=name)
    other = await finished_run(backend)
    failed = await finished_run(backend, "failed", workflow_name=name)

    assert await backend.prune_workflow_runs(params(workflow_name=name)) == 1
    assert not await exists(backend, mine.id)
    assert await exists(backend, other.id)
    assert await exists(backend, failed.id)


async def test_dry_run_counts_and_deletes_nothing(backend: Any) -> None:
    for status in ("completed", "completed", "failed", "canceled"):
        await finished_run(backend, status)
    await create_pending_run(backend)
    await asyncio.sleep(0.05)  # every run is older than the 1 ms age below

    assert await prune_runs(backend, "1h", dry_run=True) == 0  # none is an hour old
    assert await prune_runs(backend, 0.001, dry_run=True) == 4
    assert await prune_runs(backend, 0.001, statuses=["completed"], dry_run=True) == 2
    counts = await backend.count_workflow_runs()
    assert (counts.completed, counts.failed, counts.canceled, counts.pending) == (2, 1, 1, 1)

    assert await prune_runs(backend, 0.001, batch_size=1) == 4
    counts = await backend.count_workflow_runs()
    assert (counts.completed, counts.failed, counts.canceled, counts.pending) == (0, 0, 0, 1)


async def test_limit_bounds_a_batch(backend: Any) -> None:
    for _ in range(5):
        await finished_run(backend)
    assert await backend.prune_workflow_runs(params(limit=2)) == 2
    assert await backend.count_prunable_workflow_runs(params(limit=2)) == 3


def test_params_are_checked() -> None:
    with pytest.raises(ValueError, match="only finished runs"):
        PruneWorkflowRunsParams(status="running", finished_before=now())
    with pytest.raises(ValueError, match="limit"):
        PruneWorkflowRunsParams(status="failed", finished_before=now(), limit=0)


async def test_pruners_at_once_delete_each_run_once(backend: Any, backend_kind: str) -> None:
    runs = 40
    for index in range(runs):
        await finished_run(backend, ("completed", "failed", "canceled")[index % 3])
    # Finished parents and children: deleting one touches the other's rows (the
    # links are set to NULL), the pattern where two unordered pruners deadlock.
    pairs = 15
    for _ in range(pairs):
        await finished_pair(backend)
    await create_pending_run(backend)
    await asyncio.sleep(0.05)  # every run is older than the 1 ms age below
    others = [second_client(backend, backend_kind) for _ in range(3)]
    try:
        results = await asyncio.gather(
            *(prune_runs(pruner, 0.001, batch_size=3) for pruner in (backend, *others))
        )
    finally:
        for other in others:
            await other.stop()

    assert sum(results) == runs + 2 * pairs
    counts = await backend.count_workflow_runs()
    assert (counts.completed, counts.failed, counts.canceled, counts.pending) == (0, 0, 0, 1)
    for table in RUN_TABLES:
        assert await rows(backend, table) == 0


async def test_postgres_pruners_take_turns(backend: Any, backend_kind: str) -> None:
    """A pruner waits for the one holding the namespace's prune lock, then does its batch."""
    if backend_kind != "postgres":
        pytest.skip("SQLite has one writer at a time by itself")
    await finished_run(backend)
    key = f"openworkflow-prune:{TEST_SCHEMA}:{backend.namespace_id}"
    holder = await psycopg.AsyncConnection.connect(prepare_server())
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))
            pruning = asyncio.create_task(backend.prune_workflow_runs(params()))

            async def waiting_for_the_lock() -> bool:
                cursor = await holder.execute(
                    "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )
                row = await cursor.fetchone()
                return bool(row and row[0])

            await wait_until(waiting_for_the_lock, message="the pruner to wait for the lock")
            assert not pruning.done()
        assert await pruning == 1
    finally:
        await holder.close()


# -- helpers -------------------------------------------------------------------


async def create_claimed_run_of(backend: Any, run: WorkflowRun) -> WorkflowRun:
    """Claim ``run`` (the only due run of its workflow name)."""
    from openworkflow.core.backend import ClaimWorkflowRunsParams

    claimed = await backend.claim_workflow_runs(
        ClaimWorkflowRunsParams(
            worker_ids=[new_id()],
            lease_duration_ms=60_000,
            workflows=[(run.workflow_name, run.version)],
        )
    )
    assert [item.id for item in claimed] == [run.id]
    return claimed[0]  # type: ignore[no-any-return]


def second_client(backend: Any, kind: str) -> Any:
    """Another client of the same namespace: its own pool or connection where it can be."""
    if kind == "postgres":
        return PostgresBackend(
            prepare_server(), namespace_id=backend.namespace_id, schema=TEST_SCHEMA
        )
    if kind == "sqlite_file":
        return SqliteBackend(str(backend.path), namespace_id=backend.namespace_id)
    return backend.with_namespace(backend.namespace_id)
