"""Step rate limits through real workers (SPEC §15), on every backend.

``step.run(..., rate_limit=RateLimit(limit, per))``: no window of length
``per`` holds more than ``limit`` calls of the step, across runs and workers;
over the limit the run parks, spending no attempt; memoized steps never take
a token, and each retry takes one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

from openworkflow import OpenWorkflow, RateLimit, Step, workflow
from openworkflow.core.flow_control import AcquireRateLimitParams, RateLimitGrant
from tests.worker.helpers import (
    FAST_RETRY,
    get_run,
    list_steps,
    running_worker,
    wait_for_parked,
)

JITTER_S = 0.05
"""Between a grant (database clock) and its body's start: the worker's own latency."""

FETCH_LIMIT = RateLimit(3, "500ms")

calls: list[tuple[str, float]] = []
"""(what, monotonic instant) of every body run, in this process."""


def _record(what: str) -> None:
    calls.append((what, time.monotonic()))


async def fetch(value: int) -> int:
    _record(f"fetch:{value}")
    return value * 10


@workflow(name="rate-limited-fetch")
async def rate_limited_fetch(step: Step, input: int) -> int:
    return int(await step.run("fetch", fetch, input, rate_limit=FETCH_LIMIT))


@workflow(name="rate-limited-fan-out")
async def rate_limited_fan_out(step: Step, input: int) -> list[int]:
    limit = RateLimit(2, "1s")
    results = await asyncio.gather(
        *(step.run(f"fetch-{index}", fetch, index, rate_limit=limit) for index in range(input))
    )
    return [int(result) for result in results]


class Customer(BaseModel):
    customer: str
    amount: int


async def charge(customer: str) -> str:
    _record(f"charge:{customer}")
    return customer


@workflow(name="rate-limited-per-customer")
async def per_customer(step: Step, input: Customer) -> str:
    limit = RateLimit(1, "60s", key=lambda order: order.customer)
    return str(await step.run("charge", charge, input.customer, rate_limit=limit))


flaky_failures: dict[int, int] = {}


async def flaky(value: int) -> int:
    _record(f"flaky:{value}")
    if flaky_failures.get(value, 0) < 1:
        flaky_failures[value] = flaky_failures.get(value, 0) + 1
        raise RuntimeError("the API hiccuped")
    return value


@workflow(name="rate-limited-retry")
async def rate_limited_retry(step: Step, input: int) -> int:
    limit = RateLimit(5, "60s")
    return int(await step.run("flaky", flaky, input, retry_policy=FAST_RETRY, rate_limit=limit))


@pytest.fixture(autouse=True)
def _fresh_records() -> None:
    calls.clear()
    flaky_failures.clear()


def count_grants(backend: Any) -> list[RateLimitGrant]:
    """Record every answer of the backend's ``acquire_rate_limit`` (the workers call it)."""
    answers: list[RateLimitGrant] = []
    acquire: Callable[[AcquireRateLimitParams], Any] = backend.acquire_rate_limit

    async def counted(params: AcquireRateLimitParams) -> RateLimitGrant:
        grant: RateLimitGrant = await acquire(params)
        answers.append(grant)
        return grant

    backend.acquire_rate_limit = counted
    return answers


def assert_at_most(limit: int, per_s: float, instants: list[float]) -> None:
    """No window of length ``per_s`` (less the worker's jitter) holds more than ``limit``."""
    instants = sorted(instants)
    for earlier, later in zip(instants, instants[limit:], strict=False):
        assert later - earlier >= per_s - JITTER_S, (
            f"{limit + 1} calls within {later - earlier:.3f}s"
        )


async def test_runs_on_two_workers_share_the_limit_and_spend_no_attempt(backend: Any) -> None:
    grants = count_grants(backend)
    ow = OpenWorkflow(backend)
    handles = [await ow.run(rate_limited_fetch, index) for index in range(10)]
    async with (
        running_worker(backend, [rate_limited_fetch], concurrency=4),
        running_worker(backend, [rate_limited_fetch], concurrency=4),
    ):
        results = [await handle.result(timeout="20s") for handle in handles]

    assert results == [index * 10 for index in range(10)]
    assert sorted(what for what, _ in calls) == sorted(f"fetch:{index}" for index in range(10))
    assert_at_most(3, 0.5, [instant for _, instant in calls])
    assert any(not grant.granted for grant in grants), "10 calls at 3 per 500 ms must wait"
    assert sum(grant.granted for grant in grants) == 10  # one token per call
    for handle in handles:
        run = await get_run(backend, handle.id)
        assert run.status == "completed"
        attempts = await list_steps(backend, handle.id)
        assert [(a.step_name, a.status) for a in attempts] == [("fetch", "completed")]


async def test_a_fan_out_parks_without_attempts_and_replays_without_tokens(backend: Any) -> None:
    grants = count_grants(backend)
    ow = OpenWorkflow(backend)
    handle = await ow.run(rate_limited_fan_out, 5)
    async with running_worker(backend, [rate_limited_fan_out], concurrency=2):
        await wait_for_parked(backend, handle.id)
        # Parked for the window: the two granted steps are done, the rest
        # have no attempt at all (none started, none failed).
        parked_attempts = await list_steps(backend, handle.id)
        assert {a.status for a in parked_attempts} == {"completed"}
        assert len(parked_attempts) == 2
        assert await handle.result(timeout="20s") == [0, 10, 20, 30, 40]

    assert_at_most(2, 1.0, [instant for _, instant in calls])
    attempts = await list_steps(backend, handle.id)
    assert sorted(a.step_name for a in attempts) == [f"fetch-{index}" for index in range(5)]
    assert {a.status for a in attempts} == {"completed"}
    # Memoized steps never asked again: exactly one grant per body run.
    assert sum(grant.granted for grant in grants) == len(calls) == 5


async def test_keys_split_the_limit_by_the_validated_input(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    async with running_worker(backend, [per_customer], concurrency=3):
        handles = [
            await ow.run(per_customer, Customer(customer=name, amount=1)) for name in ("ann", "bob")
        ]
        assert [await handle.result(timeout="10s") for handle in handles] == ["ann", "bob"]
        # Ann's second charge waits for her minute; Bob's did not wait for Ann's.
        late = await ow.run(per_customer, Customer(customer="ann", amount=2))
        parked = await wait_for_parked(backend, late.id)
        assert parked.available_at is not None
        assert parked.available_at > parked.updated_at
        assert await list_steps(backend, late.id) == []
    assert sorted(what for what, _ in calls) == ["charge:ann", "charge:bob"]


async def test_each_retry_of_a_failed_call_takes_a_token(backend: Any) -> None:
    grants = count_grants(backend)
    ow = OpenWorkflow(backend)
    handle = await ow.run(rate_limited_retry, 7)
    async with running_worker(backend, [rate_limited_retry]):
        assert await handle.result(timeout="10s") == 7
    assert [what for what, _ in calls] == ["flaky:7", "flaky:7"]
    assert sum(grant.granted for grant in grants) == 2
    attempts = await list_steps(backend, handle.id)
    assert [a.status for a in attempts] == ["failed", "completed"]
