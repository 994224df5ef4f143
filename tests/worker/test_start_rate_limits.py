"""``@workflow(rate_limit=...)``: how often runs start, across workers, with nothing failed.

A run's first pass takes a token of the workflow's ``start:`` bucket; over the
limit it gets a reservation and goes back to the queue until then, and starts
on it when claimed again (it asks once). The strict promise is on the grant
instants (the database's clock), which these tests read from the backend's
answers; the bodies start a moment after them.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from openworkflow import OpenWorkflow, RateLimit, workflow
from openworkflow.core.flow_control import AcquireRateLimitParams, RateLimitGrant
from openworkflow.errors import WorkflowDefinitionError
from tests.worker.helpers import get_run, running_worker

PER = timedelta(milliseconds=400)


class Order(BaseModel):
    shop: str
    number: int


@workflow(name="limited-starts", rate_limit=RateLimit(2, per="400ms"))
async def limited_starts(input: Order) -> int:
    return input.number


@workflow(
    name="starts-per-shop",
    rate_limit=RateLimit(1, per="400ms", key=lambda order: order.shop),
)
async def starts_per_shop(input: Order) -> str:
    return f"{input.shop}{input.number}"


def spy_on_grants(backend: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Record, per run, its key and the instant its start was granted (now or reserved)."""
    granted: dict[str, Any] = {}
    reserve = backend.reserve_rate_limit

    async def spy(params: AcquireRateLimitParams) -> RateLimitGrant:
        grant = await reserve(params)
        run_id = params.workflow_run_id or ""
        assert run_id not in granted, "a run asked twice for its start"
        granted[run_id] = (params.key, grant.granted_at if grant.granted else grant.retry_at)
        return grant

    monkeypatch.setattr(backend, "reserve_rate_limit", spy)
    return granted


def assert_window(instants: list[Any], limit: int) -> None:
    ordered = sorted(instants)
    for first, later in zip(ordered, ordered[limit:], strict=False):
        assert later - first >= PER, (ordered, limit)


async def test_no_window_holds_more_starts_than_the_limit(
    backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    granted = spy_on_grants(backend, monkeypatch)
    ow = OpenWorkflow(backend)
    handles = [await ow.run(limited_starts, Order(shop="s", number=n)) for n in range(7)]
    async with running_worker(backend, [limited_starts], concurrency=8):
        results = await asyncio.gather(*(handle.result(timeout=30) for handle in handles))
    assert sorted(results) == list(range(7))
    assert set(granted) == {handle.id for handle in handles}
    assert_window([at for _, at in granted.values()], limit=2)
    for handle in handles:
        run = await get_run(backend, handle.id)
        # Put back before its code ran: one pass, nothing failed.
        assert (run.status, run.attempts, run.error) == ("completed", 1, None)


async def test_each_key_has_its_own_window(backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    granted = spy_on_grants(backend, monkeypatch)
    ow = OpenWorkflow(backend)
    handles = [
        await ow.run(starts_per_shop, Order(shop=shop, number=n))
        for n in range(3)
        for shop in ("a", "b")
    ]
    async with running_worker(backend, [starts_per_shop], concurrency=6):
        await asyncio.gather(*(handle.result(timeout=30) for handle in handles))
    for shop in ("a", "b"):
        assert_window([at for key, at in granted.values() if key == shop], limit=1)
    # The two shops did not wait for each other: their first starts are close.
    firsts = [min(at for key, at in granted.values() if key == shop) for shop in ("a", "b")]
    assert abs(firsts[0] - firsts[1]) < PER


def test_rate_limit_must_be_a_rate_limit() -> None:
    with pytest.raises(WorkflowDefinitionError, match="rate_limit must be a RateLimit"):

        @workflow(name="bad-rate", rate_limit=5)  # type: ignore[arg-type]
        async def bad_rate() -> None:
            return None
