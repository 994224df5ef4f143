"""Counts that stay cheap on a big table: exact while small, estimated past a cap (PostgreSQL).

Every backend: counts follow inserts, status changes and deletes at once, and
``/metrics`` shows what the backend counts on every scrape while collecting is
quick; a slow collection is served again for ``SLOW_CACHE_S`` seconds, then
while a background collection replaces it, and not past ``STALE_LIMIT_S`` (a
fake clock stands in for a big table). PostgreSQL: a status
with more runs than ``EXACT_COUNT_CAP`` takes the planner's estimate (never
below the cap) while the others stay exact, and a big step table counts its
running attempts exactly and estimates the rest (the cap and the size
threshold are lowered, and the estimate replaced, instead of writing a million
rows).
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import Any
from unittest.mock import AsyncMock

import pytest
from prometheus_client.parser import text_string_to_metric_families

from openworkflow.core.backend import (
    CancelWorkflowRunParams,
    StepAttemptCounts,
    WorkflowRunCounts,
)
from openworkflow.core.retention import PruneWorkflowRunsParams
from openworkflow.dashboard import metrics
from openworkflow.postgres import counts
from tests.backend.helpers import create_claimed_run, create_pending_run, create_step, now
from tests.dashboard.helpers import dashboard_client


def _as_dict(value: WorkflowRunCounts | StepAttemptCounts) -> dict[str, int]:
    return dataclasses.asdict(value)


def _scraped(text: str) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        found[family.name] = {sample.labels["status"]: sample.value for sample in family.samples}
    return found


async def _cancel_all_pending(backend: Any, run_ids: list[str]) -> None:
    for run_id in run_ids:
        await backend.cancel_workflow_run(CancelWorkflowRunParams(workflow_run_id=run_id))


async def _prune_canceled(backend: Any) -> int:
    params = PruneWorkflowRunsParams(
        status="canceled", finished_before=now() + timedelta(hours=1), limit=100
    )
    return int(await backend.prune_workflow_runs(params))


async def test_counts_follow_inserts_changes_and_deletes_at_once(backend: Any) -> None:
    running = await create_claimed_run(backend)
    await create_step(backend, running)
    pending = [(await create_pending_run(backend)).id for _ in range(4)]
    runs = _as_dict(await backend.count_workflow_runs())
    assert (runs["pending"], runs["running"], runs["canceled"]) == (4, 1, 0)
    assert _as_dict(await backend.count_step_attempts())["running"] == 1

    await _cancel_all_pending(backend, pending[:3])
    runs = _as_dict(await backend.count_workflow_runs())
    assert (runs["pending"], runs["running"], runs["canceled"]) == (1, 1, 3)

    assert await _prune_canceled(backend) == 3
    runs = _as_dict(await backend.count_workflow_runs())
    assert runs == {"pending": 1, "running": 1, "completed": 0, "failed": 0, "canceled": 0}


async def test_metrics_show_the_backend_counts_on_every_scrape(backend: Any) -> None:
    pending = [(await create_pending_run(backend)).id for _ in range(3)]
    async with dashboard_client(backend) as client:
        first = _scraped((await client.get("/metrics")).text)
        assert first["openworkflow_workflow_runs"] == {
            name: float(value)
            for name, value in _as_dict(await backend.count_workflow_runs()).items()
        }
        assert first["openworkflow_workflow_runs"]["pending"] == 3.0

        await _cancel_all_pending(backend, pending)
        assert await _prune_canceled(backend) == 3
        second = _scraped((await client.get("/metrics")).text)
    assert second["openworkflow_workflow_runs"]["pending"] == 0.0
    assert second["openworkflow_workflow_runs"]["canceled"] == 0.0
    assert second["openworkflow_step_attempts"] == {
        name: float(value) for name, value in _as_dict(await backend.count_step_attempts()).items()
    }


def _postgres_only(backend_kind: str) -> None:
    if backend_kind != "postgres":
        pytest.skip("planner estimates are PostgreSQL's")


def _planner_says(monkeypatch: pytest.MonkeyPatch, rows: int) -> list[int]:
    """Make the planner's estimate ``rows``; the list gets each real estimate it replaced."""
    real: list[int] = []
    parse = counts.planned_rows

    def planned(explain: Any) -> int:
        real.append(parse(explain))
        return rows

    monkeypatch.setattr(counts, "planned_rows", planned)
    return real


@pytest.mark.parametrize(("estimate", "shown"), [(1234, 1234), (1, 3)])
async def test_a_status_past_the_cap_is_estimated_the_others_stay_exact(
    backend: Any,
    backend_kind: str,
    monkeypatch: pytest.MonkeyPatch,
    estimate: int,
    shown: int,
) -> None:
    _postgres_only(backend_kind)
    monkeypatch.setattr(counts, "EXACT_COUNT_CAP", 3)
    real = _planner_says(monkeypatch, estimate)
    await create_claimed_run(backend)
    for _ in range(5):
        await create_pending_run(backend)

    runs = _as_dict(await backend.count_workflow_runs())

    # Past the cap: the planner's figure, never below the cap (5 > 3 is known).
    assert runs["pending"] == shown
    assert len(real) == 1 and real[0] >= 0  # one EXPLAIN, parsed
    # Below it: exact.
    assert (runs["running"], runs["completed"], runs["canceled"]) == (1, 0, 0)


async def test_a_small_step_table_is_counted_exactly(
    backend: Any, backend_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _postgres_only(backend_kind)
    real = _planner_says(monkeypatch, 777)
    run = await create_claimed_run(backend)
    await create_step(backend, run)

    steps = _as_dict(await backend.count_step_attempts())

    assert steps == {"running": 1, "completed": 0, "failed": 0}
    assert real == []


async def test_a_big_step_table_counts_running_attempts_exactly(
    backend: Any, backend_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _postgres_only(backend_kind)
    # Every table counts as big: running attempts exact, the others estimated.
    monkeypatch.setattr(counts, "EXACT_STEP_TABLE_ROWS", -10)
    real = _planner_says(monkeypatch, 777)
    first = await create_claimed_run(backend)
    await create_step(backend, first)
    second = await create_claimed_run(backend)
    await create_step(backend, second)

    steps = _as_dict(await backend.count_step_attempts())

    assert steps == {"running": 2, "completed": 777, "failed": 777}
    assert len(real) == 2


class _Clock:
    """A monotonic clock that moves by ``step`` seconds each reading, or when told."""

    def __init__(self, step: float) -> None:
        self.value = 1000.0
        self.step = step

    def __call__(self) -> float:
        self.value += self.step
        return self.value


async def _pending_scraped(client: Any) -> float:
    return _scraped((await client.get("/metrics")).text)["openworkflow_workflow_runs"]["pending"]


async def _wait_for_refresh(backend: Any) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while metrics.refreshing(backend):
        assert asyncio.get_running_loop().time() < deadline, "the refresh never ended"
        await asyncio.sleep(0.01)


async def test_a_slow_collection_is_served_again_then_refreshed_in_the_background(
    backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each clock reading moves past the slow threshold: every collection is "slow".
    clock = _Clock(step=metrics.SLOW_COLLECTION_S)
    monkeypatch.setattr(metrics, "_now", clock)
    await create_pending_run(backend)
    async with dashboard_client(backend) as client:
        assert await _pending_scraped(client) == 1.0
        await create_pending_run(backend)
        # Within SLOW_CACHE_S: the same text, nothing collected.
        assert await _pending_scraped(client) == 1.0
        assert not metrics.refreshing(backend)

        # Past it: still the kept text, while a collection runs in the background.
        clock.value += metrics.SLOW_CACHE_S
        assert await _pending_scraped(client) == 1.0
        await _wait_for_refresh(backend)
        assert await _pending_scraped(client) == 2.0

        # Past STALE_LIMIT_S the kept text is not served: the scrape counts.
        await create_pending_run(backend)
        clock.value += metrics.STALE_LIMIT_S
        assert await _pending_scraped(client) == 3.0


async def test_a_failed_background_refresh_makes_the_next_scrape_collect(
    backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _Clock(step=metrics.SLOW_COLLECTION_S)
    monkeypatch.setattr(metrics, "_now", clock)
    async with dashboard_client(backend) as client:
        assert await _pending_scraped(client) == 0.0
        failing = AsyncMock(side_effect=RuntimeError("database gone"))
        monkeypatch.setattr(backend, "count_workflow_runs", failing)
        clock.value += metrics.SLOW_CACHE_S
        assert await _pending_scraped(client) == 0.0  # kept text; the refresh fails
        await _wait_for_refresh(backend)
        answer = await client.get("/metrics")
    assert answer.status_code == 500


async def test_a_quick_collection_is_never_reused(
    backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "_now", _Clock(step=0.0))
    async with dashboard_client(backend) as client:
        for expected in (0.0, 1.0, 2.0):
            scraped = _scraped((await client.get("/metrics")).text)
            assert scraped["openworkflow_workflow_runs"]["pending"] == expected
            await create_pending_run(backend)
