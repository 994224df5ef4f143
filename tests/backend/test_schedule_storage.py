"""Conformance: schedule storage and the atomic tick, on every backend.

The racing tests open separate backend instances on one database (separate
pools on PostgreSQL, separate connections on a SQLite file), as separate
workers would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from openworkflow.core.backend import (
    CancelWorkflowRunParams,
    ListWorkflowRunsParams,
)
from openworkflow.core.schedule import Schedule, tick_idempotency_key
from openworkflow.core.schedule_store import ScheduleDefinition, ScheduledRunParams
from openworkflow.postgres import PostgresBackend
from openworkflow.sqlite import SqliteBackend
from tests.fixtures.postgres import TEST_SCHEMA, prepare_server

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def definition(name: str = "report", **options: Any) -> ScheduleDefinition:
    schedule = Schedule(options.pop("cron", "* * * * *"), **options)
    return ScheduleDefinition(
        name=name, workflow_name="report", version="v1", schedule=schedule, input={"n": 1}
    )


def tick(minutes: int) -> ScheduledRunParams:
    return ScheduledRunParams(schedule_name="report", tick=T0 + timedelta(minutes=minutes))


@pytest.fixture
async def rivals(backend: Any, backend_kind: str) -> AsyncIterator[list[Any]]:
    """Three backends on the test's database and namespace, as three workers have."""
    if backend_kind == "sqlite_memory":
        yield [backend, backend, backend]
        return
    others: list[Any] = []
    for _ in range(2):
        if backend_kind == "sqlite_file":
            others.append(SqliteBackend(str(backend.path), namespace_id=backend.namespace_id))
        else:
            others.append(
                PostgresBackend(
                    prepare_server(), namespace_id=backend.namespace_id, schema=TEST_SCHEMA
                )
            )
    yield [backend, *others]
    for other in others:
        await other.stop()


async def scheduled_runs(backend: Any) -> list[Any]:
    page = await backend.list_workflow_runs(ListWorkflowRunsParams(limit=500))
    return sorted(page.data, key=lambda run: run.scheduled_at)


async def test_racing_callers_create_one_run_per_tick(rivals: list[Any]) -> None:
    await rivals[0].upsert_schedules([definition(overlap="allow")])
    calls = [rival.create_scheduled_run(tick(n)) for n in range(1, 6) for rival in rivals * 3]
    results = await asyncio.gather(*calls)

    created = [result.run for result in results if result.outcome == "created"]
    # A later tick served first makes the earlier ones already served: never two per tick.
    assert len({run.scheduled_at for run in created}) == len(created) >= 1
    assert {result.outcome for result in results} <= {"created", "already-served"}
    runs = await scheduled_runs(rivals[0])
    assert [run.id for run in runs] == [
        run.id for run in sorted(created, key=lambda r: r.scheduled_at)
    ]
    for run in runs:
        assert (run.workflow_name, run.version, run.input) == ("report", "v1", {"n": 1})
        assert run.idempotency_key == tick_idempotency_key("report", run.scheduled_at)
    (stored,) = (await rivals[0].list_schedules()).schedules
    assert stored.last_tick_at == max(run.scheduled_at for run in runs)


async def test_ticks_served_in_order_by_racing_callers_each_get_their_run(
    rivals: list[Any],
) -> None:
    await rivals[0].upsert_schedules([definition(overlap="allow")])
    for minute in range(1, 6):
        results = await asyncio.gather(
            *(rival.create_scheduled_run(tick(minute)) for rival in rivals * 3)
        )
        assert sorted(result.outcome for result in results) == ["already-served"] * 8 + ["created"]
    runs = await scheduled_runs(rivals[0])
    assert [run.scheduled_at for run in runs] == [T0 + timedelta(minutes=n) for n in range(1, 6)]


async def test_an_old_tick_after_a_newer_one_is_already_served(backend: Any) -> None:
    await backend.upsert_schedules([definition()])
    assert (await backend.create_scheduled_run(tick(5))).outcome == "created"
    assert (await backend.create_scheduled_run(tick(3))).outcome == "already-served"
    assert (await backend.create_scheduled_run(tick(5))).outcome == "already-served"
    unknown = ScheduledRunParams(schedule_name="nope", tick=T0)
    assert (await backend.create_scheduled_run(unknown)).outcome == "unknown"


async def test_overlap_skip_consumes_ticks_while_the_last_run_is_active(backend: Any) -> None:
    await backend.upsert_schedules([definition(overlap="skip")])
    first = await backend.create_scheduled_run(tick(1))
    assert first.outcome == "created" and first.run is not None
    assert (await backend.create_scheduled_run(tick(2))).outcome == "skipped-overlap"
    await backend.cancel_workflow_run(CancelWorkflowRunParams(workflow_run_id=first.run.id))
    assert (await backend.create_scheduled_run(tick(2))).outcome == "already-served"
    assert (await backend.create_scheduled_run(tick(3))).outcome == "created"
    (stored,) = (await backend.list_schedules(["report"])).schedules
    assert stored.last_tick_at == T0 + timedelta(minutes=3)


async def test_upsert_keeps_first_sighting_last_tick_and_pause(backend: Any) -> None:
    await backend.upsert_schedules([definition(), definition("other")])
    (before,) = (await backend.list_schedules(["report"])).schedules
    await backend.create_scheduled_run(tick(1))
    await backend.pause_schedule("report")
    await backend.upsert_schedules([definition(cron="*/5 * * * *", timezone="Europe/Paris")])
    (after,) = (await backend.list_schedules(["report"])).schedules
    assert (after.cron, after.timezone) == ("*/5 * * * *", "Europe/Paris")
    assert after.first_seen_at == before.first_seen_at
    assert after.last_tick_at == T0 + timedelta(minutes=1)
    assert after.paused_at is not None and after.last_run_id is not None
    snapshot = await backend.list_schedules()
    assert [item.name for item in snapshot.schedules] == ["other", "report"]
    assert snapshot.now.tzinfo is not None


async def test_paused_schedules_and_workflows_consume_ticks_without_runs(backend: Any) -> None:
    await backend.upsert_schedules([definition(overlap="allow")])
    assert (await backend.pause_schedule("report")) is not None
    assert (await backend.create_scheduled_run(tick(1))).outcome == "skipped-paused"
    resumed = await backend.resume_schedule("report")
    assert resumed is not None and resumed.paused_at is None
    assert resumed.last_tick_at is not None and resumed.last_tick_at > T0 + timedelta(minutes=1)
    await backend.pause_workflow("report")
    assert (await backend.create_scheduled_run(tick(10**6))).outcome == "skipped-paused"
    assert await scheduled_runs(backend) == []
    assert await backend.pause_schedule("nope") is None
    assert await backend.resume_schedule("nope") is None
