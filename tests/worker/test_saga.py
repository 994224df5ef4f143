"""Sagas (``openworkflow.saga``): compensations run newest first, once, the same on every replay.

Most workflows park on a durable sleep after compensating, so the code after
it runs on a later pass that replays the saga (the failed step raises its
memoized failure, the compensations return their stored results).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openworkflow import NonRetryableError, OpenWorkflow, RetryPolicy, Step, workflow
from openworkflow.errors import WorkflowFailedError
from openworkflow.saga import CompensationError, Saga
from tests.worker.helpers import FAST_RETRY, attempts_named, list_steps, running_worker
from workflows.trip_booking import trip_booking

ONE_ATTEMPT = RetryPolicy(maximum_attempts=1)


class SoldOut(NonRetryableError):
    """A booking that fails for good at once."""


class Ledger:
    """What the step bodies really did, in order (an oracle outside the engine)."""

    def __init__(self) -> None:
        self.entries: list[str] = []

    def action(self, entry: str, result: Any = None) -> Any:
        """A step body that records ``entry`` and returns ``result`` (default: ``entry``)."""

        def body(*args: Any) -> Any:
            self.entries.append(entry if not args else f"{entry} {args[0]}")
            return entry if result is None else result

        return body

    def failing(self, entry: str, error: Exception, *, times: int | None = None) -> Any:
        """A step body that records ``entry`` and raises ``error`` (the first ``times`` calls)."""

        def body(*args: Any) -> Any:
            self.entries.append(entry)
            if times is None or self.entries.count(entry) <= times:
                raise error
            return f"{entry} ok"

        return body


async def test_compensations_run_newest_first_once_and_never_flip_after_replays(
    backend: Any,
) -> None:
    ledger = Ledger()

    @workflow(name="saga-reverse")
    async def reverse(step: Step) -> dict[str, Any]:
        saga = Saga(step)
        outcome = "booked"
        try:
            await saga.run(
                "flight", ledger.action("flight", "FL-1"), compensate=ledger.action("undo")
            )
            await saga.run(
                "hotel", ledger.action("hotel", "HT-1"), compensate=ledger.action("undo")
            )
            await saga.run("car", ledger.failing("car", SoldOut("no cars")))
        except SoldOut as error:
            await saga.compensate()
            await saga.compensate()  # the registrations are consumed: this runs nothing
            outcome = f"compensated: {error}"
        await step.sleep("settle", "50ms")  # the rest runs on a pass that replays all of it
        return {"outcome": outcome, "compensated": saga.compensated}

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [reverse]):
        handle = await ow.run(reverse)
        result = await handle.result(timeout="10s")
    assert result == {"outcome": "compensated: no cars", "compensated": ["hotel", "flight"]}
    # Each compensation got its step's result and ran once; the car was tried once.
    assert ledger.entries == ["flight", "hotel", "car", "undo HT-1", "undo FL-1"]
    steps = await list_steps(backend, handle.id)
    assert [(s.step_name, s.status) for s in steps if s.kind == "function"] == [
        ("flight", "completed"),
        ("hotel", "completed"),
        ("car", "failed"),
        ("compensate-hotel", "completed"),
        ("compensate-flight", "completed"),
    ]


async def test_a_failing_compensation_is_retried_and_the_others_still_run(backend: Any) -> None:
    ledger = Ledger()

    @workflow(name="saga-failing-undo")
    async def failing_undo(step: Step) -> dict[str, Any]:
        saga = Saga(step, compensation_retry_policy=FAST_RETRY)
        try:
            async with saga:
                await saga.run("a", ledger.action("a"), compensate=ledger.action("undo-a"))
                undo_b = ledger.failing("undo-b", ConnectionError("refund api down"))
                await saga.run("b", ledger.action("b"), compensate=undo_b)
                flaky = ledger.failing("undo-c", TimeoutError("slow"), times=1)
                await saga.run("c", ledger.action("c"), compensate=flaky)
                await saga.run("d", ledger.failing("d", SoldOut("sold out")))
        except CompensationError as error:
            await step.sleep("settle", "50ms")
            return {
                "failed": error.failed,
                "message": str(error),
                "cause": repr(error.__cause__),
                "trigger": repr(error.__context__),
                "compensated": saga.compensated,
            }
        return {"outcome": "not compensated"}

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [failing_undo]):
        handle = await ow.run(failing_undo)
        result = await handle.result(timeout="10s")
    assert result == {
        "failed": ["b"],
        "message": "1 compensation failed: b (ConnectionError: refund api down)",
        "cause": "ConnectionError('refund api down')",
        "trigger": "SoldOut('sold out')",
        "compensated": ["c", "a"],
    }
    # undo-c failed once and was retried; undo-b used its three attempts; undo-a still ran.
    assert ledger.entries == [
        *("a", "b", "c", "d"),
        *("undo-c", "undo-c"),
        *("undo-b", "undo-b", "undo-b"),
        "undo-a a",  # called with the step's result
    ]
    steps = await list_steps(backend, handle.id)
    assert [s.status for s in attempts_named(steps, "compensate-b")] == ["failed"] * 3
    assert [s.status for s in attempts_named(steps, "compensate-c")] == ["failed", "completed"]


async def test_the_context_manager_compensates_then_re_raises_the_original(backend: Any) -> None:
    ledger = Ledger()

    @workflow(name="saga-reraise")
    async def reraise(step: Step) -> None:
        async with Saga(step) as saga:
            await saga.run("flight", ledger.action("flight"), compensate=ledger.action("undo"))
            await saga.run("hotel", ledger.failing("hotel", SoldOut("Ritz is full")))

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [reraise]):
        handle = await ow.run(reraise)
        with pytest.raises(WorkflowFailedError) as failure:
            await handle.result(timeout="10s")
    # The run fails with the step's own error, as it would without the saga.
    assert failure.value.error["name"] == "SoldOut"
    assert failure.value.error["message"] == "Ritz is full"
    assert ledger.entries == ["flight", "hotel", "undo flight"]


async def test_parking_and_step_retries_inside_the_block_do_not_compensate(backend: Any) -> None:
    ledger = Ledger()
    flaky = ledger.failing("flaky", ConnectionError("blip"), times=2)

    @workflow(name="saga-parks")
    async def parks(step: Step) -> dict[str, Any]:
        async with Saga(step) as saga:
            await saga.run("flight", ledger.action("flight"), compensate=ledger.action("undo"))
            await step.sleep("nap", "50ms")  # ends the pass with Suspend: not a failure
            await saga.run("flaky", flaky, retry_policy=FAST_RETRY, compensate=ledger.action("u"))
            await step.sleep("nap", "20ms")
        return {"compensated": saga.compensated}

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [parks]):
        handle = await ow.run(parks)
        assert await handle.result(timeout="10s") == {"compensated": []}
    assert ledger.entries == ["flight", "flaky", "flaky", "flaky"]
    names = {s.step_name for s in await list_steps(backend, handle.id)}
    assert not any(name.startswith("compensate-") for name in names)


async def test_parallel_steps_are_undone_in_call_order_reversed(backend: Any) -> None:
    ledger = Ledger()

    async def slow_flight() -> str:
        await asyncio.sleep(0.2)  # finishes after the hotel, though called first
        ledger.entries.append("flight")
        return "flight"

    @workflow(name="saga-parallel")
    async def parallel(step: Step) -> list[str]:
        saga = Saga(step)
        try:
            await asyncio.gather(
                saga.run("flight", slow_flight, compensate=ledger.action("undo")),
                saga.run("hotel", ledger.action("hotel"), compensate=ledger.action("undo")),
            )
            await saga.run("car", ledger.failing("car", SoldOut("no cars")))
        except SoldOut:
            await saga.compensate()
        await step.sleep("settle", "20ms")
        return saga.compensated

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [parallel]):
        handle = await ow.run(parallel)
        assert await handle.result(timeout="10s") == ["hotel", "flight"]
    assert ledger.entries == ["hotel", "flight", "car", "undo hotel", "undo flight"]


@pytest.mark.parametrize(
    ("destination", "expected"),
    [
        (
            "Lisbon",
            {
                "status": "compensated",
                "reason": "no cars available in Lisbon",
                "compensated": ["hotel", "flight"],
            },
        ),
        (
            "Porto",
            {
                "status": "booked",
                "flight": {"booking_id": "FL-T-1", "to": "Porto"},
                "hotel": {"booking_id": "HT-T-1", "nights": 3},
                "car": {"booking_id": "CR-T-1"},
            },
        ),
    ],
)
async def test_the_trip_booking_example(backend: Any, destination: str, expected: Any) -> None:
    ow = OpenWorkflow(backend)
    async with running_worker(backend, [trip_booking]):
        handle = await ow.run(trip_booking, {"trip_id": "T-1", "destination": destination})
        assert await handle.result(timeout="10s") == expected
    steps = await list_steps(backend, handle.id)
    compensations = [(s.step_name, s.status) for s in steps if s.step_name.startswith("comp")]
    if expected["status"] == "compensated":
        assert compensations == [
            ("compensate-hotel", "completed"),
            ("compensate-flight", "completed"),
        ]
        assert [s.status for s in attempts_named(steps, "car")] == ["failed"]
        assert attempts_named(steps, "compensate-hotel")[0].output == "canceled HT-T-1"
    else:
        assert compensations == []
