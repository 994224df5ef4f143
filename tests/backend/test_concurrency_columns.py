"""Conformance: a run's concurrency key and limit are stored and read back on every backend."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from openworkflow.core.backend import ListWorkflowRunsParams
from openworkflow.core.schedule import Schedule
from openworkflow.core.schedule_store import ScheduleDefinition, ScheduledRunParams
from tests.backend.helpers import claim, create_pending_run, get_run, new_id

TICK = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


async def test_a_limited_run_round_trips_its_key_and_limit(backend: Any) -> None:
    created = await create_pending_run(backend, concurrency_key="user-7", concurrency_limit=3)
    assert (created.concurrency_key, created.concurrency_limit) == ("user-7", 3)

    stored = await get_run(backend, created.id)
    assert (stored.concurrency_key, stored.concurrency_limit) == ("user-7", 3)
    assert stored.priority == 0 and stored.scheduled_at is None  # the columns before are intact


async def test_the_shared_empty_key_is_stored_as_empty_not_null(backend: Any) -> None:
    created = await create_pending_run(backend, concurrency_key="", concurrency_limit=1)
    stored = await get_run(backend, created.id)
    assert (stored.concurrency_key, stored.concurrency_limit) == ("", 1)


async def test_a_run_without_a_limit_reads_none(backend: Any) -> None:
    created = await create_pending_run(backend)
    assert (created.concurrency_key, created.concurrency_limit) == (None, None)
    stored = await get_run(backend, created.id)
    assert (stored.concurrency_key, stored.concurrency_limit) == (None, None)


async def test_an_idempotent_create_also_writes_them(backend: Any) -> None:
    fields: dict[str, Any] = {
        "workflow_name": new_id(),
        "idempotency_key": new_id(),
        "concurrency_key": "k" * 255,
        "concurrency_limit": 2**31 - 1,
    }
    first = await create_pending_run(backend, **fields)
    again = await create_pending_run(backend, **fields)
    assert again.id == first.id
    stored = await get_run(backend, first.id)
    assert (stored.concurrency_key, stored.concurrency_limit) == ("k" * 255, 2**31 - 1)


async def test_a_claimed_run_carries_them(backend: Any) -> None:
    # A claim's row has extra columns after the run's: they must not shift these.
    created = await create_pending_run(backend, concurrency_key="b", concurrency_limit=4)
    claimed = await claim(backend)
    assert claimed is not None and claimed.id == created.id
    assert (claimed.concurrency_key, claimed.concurrency_limit) == ("b", 4)
    assert claimed.has_step_attempts is not True and claimed.lease_expired is False


async def test_listed_runs_carry_them(backend: Any) -> None:
    limited = await create_pending_run(backend, concurrency_key="a", concurrency_limit=5)
    plain = await create_pending_run(backend)
    page = await backend.list_workflow_runs(ListWorkflowRunsParams(limit=10))
    by_id = {run.id: (run.concurrency_key, run.concurrency_limit) for run in page.data}
    assert by_id == {limited.id: ("a", 5), plain.id: (None, None)}


async def test_a_schedule_tick_run_carries_them(backend: Any) -> None:
    await backend.upsert_schedules(
        [
            ScheduleDefinition(
                name="limited",
                workflow_name="report",
                version=None,
                schedule=Schedule("* * * * *", overlap="allow"),
                input={"user": "ann"},
            )
        ]
    )
    result = await backend.create_scheduled_run(
        ScheduledRunParams(
            schedule_name="limited", tick=TICK, concurrency_key="ann", concurrency_limit=2
        )
    )
    assert result.outcome == "created" and result.run is not None
    assert (result.run.concurrency_key, result.run.concurrency_limit) == ("ann", 2)
    stored = await get_run(backend, result.run.id)
    assert (stored.concurrency_key, stored.concurrency_limit) == ("ann", 2)
    assert stored.scheduled_at == TICK
