"""Deterministic step failures: retries before the error, and final failures replayed.

Each workflow parks on a durable sleep after the failure it handles, so the
code after the sleep runs on a later pass that replays everything before it.
"""

from __future__ import annotations

from typing import Any

import pytest

from openworkflow import NonRetryableError, OpenWorkflow, RetryAfter, RetryPolicy, Step, workflow
from openworkflow.errors import StepFailedError
from tests.worker.helpers import FAST_RETRY, list_steps, running_worker

ONE_ATTEMPT = RetryPolicy(maximum_attempts=1)


class HotelFull(Exception):
    """A user error whose constructor takes other arguments than its message."""

    def __init__(self, hotel: str, nights: int) -> None:
        super().__init__(f"{hotel} is full for {nights} nights")
        self.hotel = hotel
        self.nights = nights


class CardDeclined(NonRetryableError):
    pass


class Unrebuildable(Exception):
    """Its message depends on something that is not stored: it cannot be rebuilt."""

    def __init__(self, handle: object) -> None:
        super().__init__()
        self.handle = handle

    def __str__(self) -> str:
        return f"failed on {id(self.handle)}"


async def test_a_compensated_saga_never_flips_after_a_replay(backend: Any) -> None:
    calls = {"flight": 0, "hotel": 0, "cancel-flight": 0}

    def book_hotel() -> str:
        calls["hotel"] += 1
        if calls["hotel"] == 1:
            raise HotelFull("Ritz", 2)
        return "hotel-ok"  # a second call would succeed: it must never happen

    def counted(name: str, value: str) -> Any:
        def body() -> str:
            calls[name] += 1
            return value

        return body

    @workflow(name="saga-trip")
    async def trip(step: Step) -> dict[str, Any]:
        await step.run("flight", counted("flight", "flight-ok"))
        try:
            await step.run("hotel", book_hotel, retry_policy=ONE_ATTEMPT)
            outcome = "booked"
        except HotelFull as error:
            await step.run("cancel-flight", counted("cancel-flight", "canceled"))
            outcome = f"compensated: {error} ({error.hotel}, {error.nights})"
        await step.sleep("settle", "50ms")  # the rest runs on a replay
        return {"outcome": outcome}

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [trip]):
        handle = await ow.run(trip)
        result = await handle.result(timeout="10s")
    assert result == {"outcome": "compensated: Ritz is full for 2 nights (Ritz, 2)"}
    assert calls == {"flight": 1, "hotel": 1, "cancel-flight": 1}
    hotel = [step for step in await list_steps(backend, handle.id) if step.step_name == "hotel"]
    assert [step.status for step in hotel] == ["failed"]
    assert hotel[0].error["name"] == "HotelFull"  # the original's error shape is kept
    assert hotel[0].error["message"] == "Ritz is full for 2 nights"


async def test_polling_with_catch_and_sleep_calls_once_per_iteration(backend: Any) -> None:
    calls = []

    def poll() -> str:
        calls.append(1)
        raise ValueError("not ready")

    @workflow(name="poller")
    async def poller(step: Step) -> int:
        misses = 0
        for iteration in range(5):
            try:
                await step.run(f"poll-{iteration}", poll, retry_policy=ONE_ATTEMPT)
            except ValueError:
                misses += 1
                await step.sleep(f"wait-{iteration}", "10ms")
        return misses

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [poller]):
        handle = await ow.run(poller)
        assert await handle.result(timeout="10s") == 5
    assert len(calls) == 5


async def test_retries_happen_before_the_error_reaches_the_workflow(backend: Any) -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError(f"attempt {len(calls)} failed")
        return "ok"

    @workflow(name="flaky-caller")
    async def caller(step: Step) -> str:
        try:
            return str(await step.run("flaky", flaky, retry_policy=FAST_RETRY))
        except ConnectionError:
            return "gave up"  # never: the third attempt succeeds

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [caller]):
        handle = await ow.run(caller)
        assert await handle.result(timeout="10s") == "ok"
    assert len(calls) == 3
    statuses = [step.status for step in await list_steps(backend, handle.id)]
    assert statuses == ["failed", "failed", "completed"]


@pytest.mark.parametrize(
    ("raise_error", "expected_type", "expected_message"),
    [
        (lambda: ValueError("bad value"), ValueError, "bad value"),
        (lambda: HotelFull("Ritz", 3), HotelFull, "Ritz is full for 3 nights"),
        (lambda: CardDeclined("card 4242"), CardDeclined, "card 4242"),
        (lambda: Unrebuildable(object()), StepFailedError, "Unrebuildable: failed on"),
    ],
    ids=["builtin", "user-class-with-arguments", "non-retryable-subclass", "fallback"],
)
async def test_the_first_pass_and_every_replay_see_the_same_exception(
    backend: Any,
    raise_error: Any,
    expected_type: type[BaseException],
    expected_message: str,
) -> None:
    seen: list[tuple[str, str]] = []

    def fail() -> None:
        raise raise_error()

    @workflow(name="sees-errors")
    async def sees(step: Step) -> int:
        try:
            await step.run("fail", fail, retry_policy=ONE_ATTEMPT)
        except Exception as error:
            seen.append((type(error).__name__, str(error)))
            assert isinstance(error, expected_type)
        for index in range(3):  # three sleeps: the failure is replayed on each later pass
            await step.sleep(f"nap-{index}", "10ms")
        return len(seen)

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [sees]):
        handle = await ow.run(sees)
        await handle.result(timeout="10s")
    assert len(seen) == 4  # the first pass and three replays raised it, at the same call
    assert len(set(seen)) == 1, seen
    assert seen[0][1].startswith(expected_message)
    fails = [step for step in await list_steps(backend, handle.id) if step.step_name == "fail"]
    assert len(fails) == 1, "the function ran once"


async def test_an_uncaught_final_failure_fails_the_run_with_the_error(backend: Any) -> None:
    @workflow(name="uncaught")
    async def uncaught(step: Step) -> None:
        await step.run("boom", lambda: int("x"), retry_policy=ONE_ATTEMPT)

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [uncaught]):
        handle = await ow.run(uncaught)
        with pytest.raises(Exception, match="invalid literal"):
            await handle.result(timeout="10s")
    run = await ow.get_run(handle.id)
    assert run is not None and run.status == "failed"
    assert run.error["name"] == "ValueError"


async def test_step_run_passes_arguments_to_sync_and_async_bodies(backend: Any) -> None:
    def add(left: int, right: int) -> int:
        return left + right

    async def greet(name: str, punctuation: str) -> str:
        return f"hello {name}{punctuation}"

    @workflow(name="with-arguments")
    async def with_arguments(step: Step) -> list[Any]:
        total = await step.run("add", add, 2, 3)
        greeting = await step.run("greet", greet, "Ada", "!")
        await step.sleep("nap", "10ms")  # replayed from here on: same stored results
        return [total, greeting]

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [with_arguments]):
        handle = await ow.run(with_arguments)
        assert await handle.result(timeout="10s") == [5, "hello Ada!"]


async def test_retry_after_runs_the_step_again_without_spending_an_attempt(backend: Any) -> None:
    calls = []

    def rate_limited() -> str:
        calls.append(1)
        if len(calls) <= 2:
            raise RetryAfter("20ms", "429: come back in 20 ms")
        if len(calls) == 3:
            raise ConnectionError("reset by peer")  # a real failure: the first attempt spent
        return "served"

    two_attempts = RetryPolicy(initial_interval="10ms", maximum_attempts=2)

    @workflow(name="rate-limited")
    async def caller(step: Step) -> str:
        # Two attempts: had the RetryAfters spent any, the real failure would be final.
        try:
            return str(await step.run("call", rate_limited, retry_policy=two_attempts))
        except ConnectionError:
            return "gave up"

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [caller]):
        handle = await ow.run(caller)
        assert await handle.result(timeout="10s") == "served"
    assert len(calls) == 4
    attempts = await list_steps(backend, handle.id)
    assert [step.status for step in attempts] == ["failed", "failed", "failed", "completed"]
    assert attempts[0].error["message"] == "429: come back in 20 ms"
