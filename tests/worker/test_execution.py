"""Executing workflows end to end: input, steps, memoization, sleeps, retries, limits.

Every test runs a real :class:`~openworkflow.Worker` against the ``backend``
fixture and checks what was stored: run statuses, outputs, errors and step
attempt rows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from openworkflow import (
    InputValidationError,
    NonRetryableError,
    OpenWorkflow,
    RetryPolicy,
    RunInfo,
    Step,
    WorkflowCanceledError,
    WorkflowFailedError,
    workflow,
)
from openworkflow.core import clock as app_clock
from tests.support.proxy import ProxyBackend
from tests.support.waiting import wait_until
from tests.worker.helpers import (
    FAST_RETRY,
    attempts_named,
    get_run,
    idle_worker,
    list_steps,
    now,
    running_worker,
    step_names,
    steps_by_name,
    tick_and_settle,
    wait_for_running_step,
    wait_for_status,
    wait_idle,
)


class Order(BaseModel):
    sku: str
    quantity: int


class InventoryError(ValueError):
    def __init__(self, sku: str) -> None:
        super().__init__(f"{sku} is out of stock")
        self.sku = sku


class CardDeclinedError(NonRetryableError):
    pass


async def double_later(value: int) -> int:
    await asyncio.sleep(0)
    return value * 2


async def noop() -> None:
    return None


class AsyncDoubler:
    async def __call__(self) -> int:
        return await double_later(50)


# -- input and injected parameters ------------------------------------------------


async def test_model_input_arrives_as_a_model_instance(backend: Any) -> None:
    seen: list[Any] = []

    @workflow
    async def order_total(input: Order) -> dict:
        seen.append(input)
        return {"kind": type(input).__name__, "sku": input.sku, "total": input.quantity * 2}

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [order_total]):
        from_dict = await ow.run(order_total, {"sku": "abc", "quantity": "3"})
        from_model = await ow.run(order_total, Order(sku="xyz", quantity=4))
        assert await from_dict.result(timeout="5s") == {"kind": "Order", "sku": "abc", "total": 6}
        assert await from_model.result(timeout="5s") == {"kind": "Order", "sku": "xyz", "total": 8}

    assert all(isinstance(item, Order) for item in seen)
    # What is stored is plain JSON, already validated (the string "3" became 3).
    assert (await get_run(backend, from_dict.id)).input == {"sku": "abc", "quantity": 3}
    assert (await get_run(backend, from_model.id)).input == {"sku": "xyz", "quantity": 4}


async def test_invalid_input_raises_in_the_caller_and_writes_no_run(backend: Any) -> None:
    @workflow
    async def order_total(input: Order) -> int:
        return input.quantity

    ow = OpenWorkflow(backend)
    with pytest.raises(InputValidationError) as raised:
        await ow.run(order_total, {"sku": "abc", "quantity": "many"})

    assert raised.value.workflow_name == "order-total"
    assert "quantity" in str(raised.value)
    assert [error["loc"] for error in raised.value.errors] == [("quantity",)]
    assert (await ow.list_runs()).data == []
    counts = await ow.counts()
    assert (counts.pending, counts.running, counts.completed) == (0, 0, 0)


async def test_parameters_are_injected_by_name(backend: Any) -> None:
    @workflow
    async def no_parameters() -> str:
        return "nothing injected"

    @workflow
    async def only_run(run: RunInfo) -> str:
        return run.id

    @workflow
    async def reversed_order(version: str | None, step: Step, input: dict) -> dict:
        doubled = await step.run("double", lambda: input["n"] * 2)
        return {"doubled": doubled, "version": version, "step": type(step).__name__}

    @workflow
    async def keyword_only(*, input: dict, run: RunInfo) -> dict:
        return {"input": input, "name": run.workflow_name}

    ow = OpenWorkflow(backend)
    async with running_worker(
        backend, [no_parameters, only_run, reversed_order, keyword_only], concurrency=4
    ):
        first = await ow.run(no_parameters)
        second = await ow.run(only_run)
        third = await ow.run(reversed_order, {"n": 21})
        fourth = await ow.run(keyword_only, {"a": [1, 2]})
        assert await first.result(timeout="5s") == "nothing injected"
        assert await second.result(timeout="5s") == second.id
        assert await third.result(timeout="5s") == {
            "doubled": 42,
            "version": None,
            "step": "StepExecutor",
        }
        assert await fourth.result(timeout="5s") == {
            "input": {"a": [1, 2]},
            "name": "keyword-only",
        }


async def test_run_info_describes_the_run_and_is_stable_across_replays(backend: Any) -> None:
    infos: list[RunInfo] = []

    @workflow
    async def introspect(run: RunInfo, step: Step) -> dict:
        infos.append(run)
        await step.sleep("pause", "10ms")
        return {"id": run.id, "name": run.workflow_name}

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [introspect]):
        handle = await ow.run(introspect)
        assert await handle.result(timeout="5s") == {"id": handle.id, "name": "introspect"}

    stored = await get_run(backend, handle.id)
    assert len(infos) == 2, "one pass before the sleep, one after"
    assert infos[0] == infos[1]
    info = infos[0]
    assert info.id == handle.id
    assert info.workflow_name == "introspect"
    assert handle.workflow_run is not None
    assert info.created_at == handle.workflow_run.created_at == stored.created_at
    assert info.started_at is not None
    assert info.started_at == stored.started_at
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.id = "other"  # type: ignore[misc]


async def test_the_run_version_is_passed_to_the_function(backend: Any) -> None:
    @workflow(name="greet", version="v2")
    async def greet_v2(version: str | None) -> dict:
        return {"version": version}

    @workflow(name="greet")
    async def greet_unversioned(version: str | None) -> dict:
        return {"version": version}

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [greet_v2, greet_unversioned], concurrency=2):
        versioned = await ow.run(greet_v2)
        unversioned = await ow.run(greet_unversioned)
        assert await versioned.result(timeout="5s") == {"version": "v2"}
        assert await unversioned.result(timeout="5s") == {"version": None}
    assert (await get_run(backend, versioned.id)).version == "v2"
    assert (await get_run(backend, unversioned.id)).version is None


# -- memoized steps ----------------------------------------------------------------


async def test_steps_run_once_and_are_replayed_from_history(backend: Any) -> None:
    calls = {"a": 0, "b": 0}
    passes: list[list[str]] = []

    def body_a() -> Any:
        calls["a"] += 1
        return (1, "two", {"three": (3,)})

    def body_b() -> str:
        calls["b"] += 1
        return "b-done"

    @workflow
    async def memo(step: Step) -> dict:
        a = await step.run("a", body_a)
        passes.append([type(a).__name__, type(a[2]["three"]).__name__])
        await step.sleep("nap", "10ms")
        b = await step.run("b", body_b)
        return {"a": a, "b": b}

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [memo]):
        handle = await ow.run(memo)
        assert await handle.result(timeout="5s") == {"a": [1, "two", {"three": [3]}], "b": "b-done"}

    assert calls == {"a": 1, "b": 1}
    # The JSON round trip happens on the first execution too, not only on replay.
    assert passes == [["list", "list"], ["list", "list"]]
    steps = steps_by_name(await list_steps(backend, handle.id))
    assert {name: (step.kind, step.status) for name, step in steps.items()} == {
        "a": ("function", "completed"),
        "nap": ("sleep", "completed"),
        "b": ("function", "completed"),
    }
    assert steps["a"].output == [1, "two", {"three": [3]}]
    assert (await get_run(backend, handle.id)).attempts == 2


async def test_a_pydantic_model_returned_by_a_step_is_stored_as_json(backend: Any) -> None:
    @workflow
    async def make_order(step: Step) -> dict:
        order = await step.run("build", lambda: Order(sku="abc", quantity=2))
        return {"order": order, "type": type(order).__name__}

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [make_order]):
        handle = await ow.run(make_order)
        assert await handle.result(timeout="5s") == {
            "order": {"sku": "abc", "quantity": 2},
            "type": "dict",
        }


async def test_sync_bodies_run_in_a_thread_and_async_bodies_are_awaited(backend: Any) -> None:
    @workflow
    async def threads(step: Step) -> dict:
        loop_thread = threading.get_ident()
        sync_thread = await step.run("sync", threading.get_ident)
        sync_name = await step.run("sync-name", lambda: threading.current_thread().name)

        async def async_ident() -> int:
            await asyncio.sleep(0)
            return threading.get_ident()

        async_thread = await step.run("async", async_ident)
        from_lambda = await step.run("lambda-coroutine", lambda: double_later(21))
        from_partial = await step.run("partial", functools.partial(double_later, 5))
        from_object = await step.run("callable-object", AsyncDoubler())
        return {
            "sync_off_loop": sync_thread != loop_thread,
            "sync_name": sync_name,
            "async_on_loop": async_thread == loop_thread,
            "lambda": from_lambda,
            "partial": from_partial,
            "object": from_object,
        }

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [threads]):
        handle = await ow.run(threads)
        result = await handle.result(timeout="5s")

    assert result["sync_off_loop"] is True
    assert result["sync_name"].startswith("openworkflow-step")
    assert result["async_on_loop"] is True
    assert (result["lambda"], result["partial"], result["object"]) == (42, 10, 100)


# -- step names ----------------------------------------------------------------------


async def test_duplicate_and_dynamic_step_names_are_indexed_in_call_order(backend: Any) -> None:
    calls: list[str] = []

    def record(value: str) -> str:
        calls.append(value)
        return value

    @workflow
    async def names(step: Step) -> list[str]:
        values = [await step.run("item", lambda i=i: record(f"item-{i}")) for i in range(3)]
        # The upstream collision example: a literal "foo:1" is skipped by the index.
        values.append(await step.run("foo", lambda: record("foo-first")))
        values.append(await step.run("foo:1", lambda: record("foo-literal")))
        values.append(await step.run("foo", lambda: record("foo-second")))
        # The counter is shared by every step kind.
        values.append(await step.run("x", lambda: record("x-function")))
        await step.sleep("x", "1ms")
        return values

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [names]):
        handle = await ow.run(names)
        output = await handle.result(timeout="5s")

    expected = [
        "item-0",
        "item-1",
        "item-2",
        "foo-first",
        "foo-literal",
        "foo-second",
        "x-function",
    ]
    assert output == expected
    assert calls == expected, "every body ran exactly once across both passes"
    steps = steps_by_name(await list_steps(backend, handle.id))
    assert set(steps) == {"item", "item:1", "item:2", "foo", "foo:1", "foo:2", "x", "x:1"}
    assert {name: step.output for name, step in steps.items() if step.kind == "function"} == {
        "item": "item-0",
        "item:1": "item-1",
        "item:2": "item-2",
        "foo": "foo-first",
        "foo:1": "foo-literal",
        "foo:2": "foo-second",
        "x": "x-function",
    }
    assert (steps["x:1"].kind, steps["x:1"].status) == ("sleep", "completed")


async def test_parallel_steps_with_gather_are_named_in_call_order(backend: Any) -> None:
    calls: list[str] = []

    async def slow() -> str:
        await asyncio.sleep(0.05)
        calls.append("slow")
        return "slow"

    async def fast() -> str:
        calls.append("fast")
        return "fast"

    def other() -> str:
        calls.append("other")
        return "other"

    @workflow
    async def fan_out(step: Step) -> list[str]:
        results = await asyncio.gather(
            step.run("fetch", slow), step.run("fetch", fast), step.run("other", other)
        )
        await step.sleep("replay", "1ms")
        return list(results)

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [fan_out]):
        handle = await ow.run(fan_out)
        assert await handle.result(timeout="5s") == ["slow", "fast", "other"]

    assert sorted(calls) == ["fast", "other", "slow"], "each branch ran once"
    steps = steps_by_name(await list_steps(backend, handle.id))
    assert {name: step.output for name, step in steps.items() if step.kind == "function"} == {
        "fetch": "slow",
        "fetch:1": "fast",
        "other": "other",
    }
    assert all(step.status == "completed" for step in steps.values())


async def test_parallel_steps_in_a_task_group_are_named_in_call_order(backend: Any) -> None:
    calls: list[int] = []

    async def work(index: int) -> int:
        await asyncio.sleep(0.01 * (3 - index))
        calls.append(index)
        return index * 10

    @workflow
    async def grouped(step: Step) -> list[int]:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(step.run("work", lambda i=i: work(i))) for i in range(3)]
        await step.sleep("replay", "1ms")
        return [task.result() for task in tasks]

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [grouped]):
        handle = await ow.run(grouped)
        assert await handle.result(timeout="5s") == [0, 10, 20]

    assert sorted(calls) == [0, 1, 2]
    steps = steps_by_name(await list_steps(backend, handle.id))
    assert {name: step.output for name, step in steps.items() if step.kind == "function"} == {
        "work": 0,
        "work:1": 10,
        "work:2": 20,
    }


# -- durable sleep -----------------------------------------------------------------


async def test_sleep_parks_the_run_and_frees_the_slot(backend: Any, clock: Any) -> None:
    passes: list[int] = []
    before_calls: list[int] = []

    @workflow
    async def napper(step: Step) -> str:
        passes.append(1)
        await step.run("before", lambda: before_calls.append(1))
        await step.sleep("nap", "1h")
        await step.run("after", lambda: "woke")
        return "rested"

    @workflow
    async def quick() -> str:
        return "quick"

    ow = OpenWorkflow(backend)
    async with idle_worker(backend, [napper, quick], concurrency=1) as worker:
        started = now()
        handle = await ow.run(napper)
        await tick_and_settle(worker, expected=1)

        parked = await get_run(backend, handle.id)
        assert parked.status == "running"
        assert parked.worker_id is None
        steps = steps_by_name(await list_steps(backend, handle.id))
        assert set(steps) == {"before", "nap"}
        assert steps["before"].status == "completed"
        nap = steps["nap"]
        assert (nap.kind, nap.status) == ("sleep", "running")
        assert nap.context["kind"] == "sleep"
        resume_at = app_clock.from_iso(nap.context["resumeAt"])
        assert parked.available_at == resume_at
        assert started + timedelta(hours=1) <= resume_at <= now() + timedelta(hours=1)

        # The only slot is free while the run sleeps: another run gets it.
        assert worker.active_run_ids == []
        other = await ow.run(quick)
        await tick_and_settle(worker, expected=1)
        assert await other.result(timeout="1s") == "quick"
        assert await worker.tick() == 0, "the sleeping run is not due yet"
        assert (await get_run(backend, handle.id)).status == "running"

        clock.advance(timedelta(hours=1, seconds=1))
        await tick_and_settle(worker, expected=1)

    done = await get_run(backend, handle.id)
    assert (done.status, done.output) == ("completed", "rested")
    steps = steps_by_name(await list_steps(backend, handle.id))
    assert set(steps) == {"before", "nap", "after"}
    assert all(step.status == "completed" for step in steps.values())
    assert steps["nap"].output is None
    assert steps["nap"].finished_at is not None and steps["nap"].finished_at >= resume_at
    assert steps["after"].created_at >= resume_at
    assert len(passes) == 2
    assert len(before_calls) == 1


async def test_sleep_resumes_after_its_duration(backend: Any) -> None:
    @workflow
    async def short_nap(step: Step) -> str:
        await step.sleep("nap", "150ms")
        return await step.run("after", lambda: "awake")

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [short_nap]):
        handle = await ow.run(short_nap)
        assert await handle.result(timeout="5s") == "awake"

    steps = steps_by_name(await list_steps(backend, handle.id))
    nap, after = steps["nap"], steps["after"]
    resume_at = app_clock.from_iso(nap.context["resumeAt"])
    # resume_at is taken when the sleep is called, created_at when its insert lands (a
    # group commit later, more under load): the gap shrinks by that much.
    assert resume_at - nap.created_at >= timedelta(milliseconds=100)
    assert nap.finished_at is not None and nap.finished_at >= resume_at
    assert after.created_at >= resume_at


async def test_multiple_sleeps_are_each_taken_once(backend: Any) -> None:
    passes: list[int] = []

    @workflow
    async def sleepy(step: Step) -> str:
        passes.append(1)
        await step.sleep("first", "20ms")
        middle = await step.run("middle", lambda: "m")
        await step.sleep("second", "20ms")
        await step.sleep("second", "20ms")  # a repeated sleep name is indexed too
        return middle

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [sleepy]):
        handle = await ow.run(sleepy)
        assert await handle.result(timeout="5s") == "m"

    steps = steps_by_name(await list_steps(backend, handle.id))
    assert set(steps) == {"first", "middle", "second", "second:1"}
    assert all(step.status == "completed" for step in steps.values())
    assert steps["middle"].created_at >= app_clock.from_iso(steps["first"].context["resumeAt"])
    assert len(passes) == 4, "one pass per sleep, plus the final one"


@pytest.mark.parametrize("style", ["gather", "task-group"])
async def test_parallel_sleeps_park_until_the_earliest_one(
    backend: Any, clock: Any, style: str
) -> None:
    passes: list[int] = []

    @workflow
    async def two_timers(step: Step) -> str:
        passes.append(1)
        # The long timer is created first, so it is the first branch to park.
        if style == "gather":
            await asyncio.gather(step.sleep("long", "1h"), step.sleep("short", "50ms"))
        else:
            async with asyncio.TaskGroup() as group:
                group.create_task(step.sleep("long", "1h"))
                group.create_task(step.sleep("short", "50ms"))
        return "both elapsed"

    ow = OpenWorkflow(backend)
    async with idle_worker(backend, [two_timers]) as worker:
        handle = await ow.run(two_timers)
        await tick_and_settle(worker, expected=1)

        steps = {step.step_name: step for step in await list_steps(backend, handle.id)}
        assert set(steps) == {"long", "short"}
        short_at = app_clock.from_iso(steps["short"].context["resumeAt"])
        long_at = app_clock.from_iso(steps["long"].context["resumeAt"])
        parked = await get_run(backend, handle.id)
        assert parked.worker_id is None
        assert parked.available_at == short_at, "the run must wake for the earliest timer"

        # The short timer elapses: the pre-pass completes it and re-parks on the long
        # one without calling the workflow function.
        await wait_until(lambda: now() > short_at, message="the short timer")
        await tick_and_settle(worker, expected=1)
        reparked = await get_run(backend, handle.id)
        assert (reparked.status, reparked.worker_id) == ("running", None)
        assert reparked.available_at == long_at
        assert len(passes) == 1

        clock.advance(timedelta(hours=1, seconds=1))
        await tick_and_settle(worker, expected=1)

    assert await handle.result(timeout="1s") == "both elapsed"
    assert len(passes) == 2


async def test_an_invalid_sleep_duration_fails_the_run(backend: Any) -> None:
    @workflow
    async def bad_nap(step: Step) -> None:
        await step.sleep("nap", "soon")

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [bad_nap]):
        handle = await ow.run(bad_nap)
        with pytest.raises(WorkflowFailedError) as raised:
            await handle.result(timeout="5s")

    error = raised.value.error
    assert error["name"] == "InvalidDurationError"
    assert 'invalid duration "soon"' in error["message"]
    run = await get_run(backend, handle.id)
    assert (run.status, run.attempts) == ("failed", 1)
    assert await list_steps(backend, handle.id) == []


# -- step retries ---------------------------------------------------------------------


async def test_a_step_failing_twice_then_succeeding_completes(backend: Any) -> None:
    calls = {"first": 0, "flaky": 0}

    def first() -> str:
        calls["first"] += 1
        return "first"

    def flaky() -> str:
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise RuntimeError(f"flaky failure {calls['flaky']}")
        return "finally"

    @workflow
    async def retrying(step: Step) -> list[str]:
        return [
            await step.run("first", first),
            await step.run("flaky", flaky, retry_policy=FAST_RETRY),
        ]

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [retrying]):
        handle = await ow.run(retrying)
        assert await handle.result(timeout="5s") == ["first", "finally"]

    steps = await list_steps(backend, handle.id)
    flaky_attempts = attempts_named(steps, "flaky")
    assert [step.status for step in flaky_attempts] == ["failed", "failed", "completed"]
    assert [step.error["message"] for step in flaky_attempts[:2]] == [
        "flaky failure 1",
        "flaky failure 2",
    ]
    assert flaky_attempts[0].error["name"] == "RuntimeError"
    assert flaky_attempts[2].output == "finally"
    assert len(attempts_named(steps, "first")) == 1
    assert calls == {"first": 1, "flaky": 3}, "only the failed step re-executes"
    run = await get_run(backend, handle.id)
    assert (run.status, run.attempts, run.error) == ("completed", 3, None)


async def test_the_default_step_policy_allows_ten_attempts(backend: Any) -> None:
    calls: list[int] = []

    def always() -> None:
        calls.append(1)
        raise RuntimeError("always fails")

    # Only the interval is overridden; the attempt budget is the step default (10),
    # independent of the workflow's own policy (1 attempt by default).
    quick = RetryPolicy(initial_interval="10ms", backoff_coefficient=1.0)

    @workflow
    async def doomed(step: Step) -> None:
        await step.run("always", always, retry_policy=quick)

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [doomed]):
        handle = await ow.run(doomed)
        with pytest.raises(WorkflowFailedError) as raised:
            await handle.result(timeout="15s")

    assert raised.value.error["name"] == "RuntimeError"
    assert raised.value.error["message"] == "always fails"
    steps = await list_steps(backend, handle.id)
    assert step_names(steps) == ["always"] * 10
    assert all(step.status == "failed" for step in steps)
    assert len(calls) == 10
    run = await get_run(backend, handle.id)
    assert (run.status, run.attempts) == ("failed", 10)
    assert run.finished_at is not None and run.available_at is None


async def test_step_retry_budgets_are_per_step(backend: Any) -> None:
    calls = {"a": 0, "b": 0}

    def fails_twice(name: str) -> str:
        calls[name] += 1
        if calls[name] <= 2:
            raise RuntimeError(f"{name} failed")
        return name

    @workflow
    async def two_flaky(step: Step) -> list[str]:
        a = await step.run("a", lambda: fails_twice("a"), retry_policy=FAST_RETRY)
        b = await step.run("b", lambda: fails_twice("b"), retry_policy=FAST_RETRY)
        return [a, b]

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [two_flaky]):
        handle = await ow.run(two_flaky)
        # With a shared budget, b's failures would add to a's and exhaust the 3 attempts.
        assert await handle.result(timeout="5s") == ["a", "b"]

    steps = await list_steps(backend, handle.id)
    for name in ("a", "b"):
        statuses = [step.status for step in attempts_named(steps, name)]
        assert statuses == ["failed", "failed", "completed"]


@pytest.mark.parametrize(
    ("error_class", "name"),
    [(NonRetryableError, "NonRetryableError"), (CardDeclinedError, "CardDeclinedError")],
)
async def test_a_non_retryable_error_fails_the_run_at_once(
    backend: Any, error_class: type[Exception], name: str
) -> None:
    calls: list[int] = []

    def charge() -> None:
        calls.append(1)
        raise error_class("card declined")

    @workflow
    async def checkout(step: Step) -> None:
        await step.run("charge", charge)  # default policy: would allow 10 attempts

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [checkout]):
        handle = await ow.run(checkout)
        with pytest.raises(WorkflowFailedError) as raised:
            await handle.result(timeout="5s")

    assert raised.value.error["name"] == name
    assert raised.value.error["message"] == "card declined"
    steps = await list_steps(backend, handle.id)
    assert [(step.step_name, step.status) for step in steps] == [("charge", "failed")]
    assert steps[0].error["name"] == name
    assert len(calls) == 1
    assert (await get_run(backend, handle.id)).attempts == 1


async def test_a_caught_step_error_lets_the_workflow_continue(backend: Any) -> None:
    def reserve() -> None:
        raise InventoryError("sku-1")

    @workflow
    async def tolerant(step: Step) -> dict:
        try:  # its final failure (one attempt here) reaches the workflow
            await step.run("reserve", reserve, retry_policy=RetryPolicy(maximum_attempts=1))
        except ValueError as error:  # the original exception type reaches the workflow
            assert isinstance(error, InventoryError)
            caught = {"type": type(error).__name__, "sku": error.sku, "message": str(error)}
        fallback = await step.run("fallback", lambda: "backordered")
        return {"caught": caught, "fallback": fallback}

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [tolerant]):
        handle = await ow.run(tolerant)
        assert await handle.result(timeout="5s") == {
            "caught": {
                "type": "InventoryError",
                "sku": "sku-1",
                "message": "sku-1 is out of stock",
            },
            "fallback": "backordered",
        }

    steps = steps_by_name(await list_steps(backend, handle.id))
    assert {name: step.status for name, step in steps.items()} == {
        "reserve": "failed",
        "fallback": "completed",
    }
    assert steps["reserve"].error["name"] == "InventoryError"
    assert steps["reserve"].error["message"] == "sku-1 is out of stock"
    run = await get_run(backend, handle.id)
    assert (run.status, run.attempts) == ("completed", 1), "a caught failure is not retried"


# -- workflow-level retries -----------------------------------------------------------


async def test_an_error_outside_steps_fails_the_run_without_retry(backend: Any) -> None:
    calls: list[int] = []

    @workflow
    async def broken(step: Step) -> None:
        await step.run("ok", lambda: calls.append(1))
        raise RuntimeError("outside any step")

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [broken]):
        handle = await ow.run(broken)
        with pytest.raises(WorkflowFailedError) as raised:
            await handle.result(timeout="5s")

    assert raised.value.error["name"] == "RuntimeError"
    assert raised.value.error["message"] == "outside any step"
    assert "RuntimeError" in raised.value.error["stack"]
    run = await get_run(backend, handle.id)
    assert (run.status, run.attempts) == ("failed", 1)
    assert run.finished_at is not None
    assert len(calls) == 1


async def test_a_workflow_retry_policy_retries_errors_outside_steps(backend: Any) -> None:
    passes: list[int] = []
    step_calls: list[int] = []

    @workflow(retry_policy=RetryPolicy(maximum_attempts=2, initial_interval="10ms"))
    async def second_time_lucky(step: Step) -> str:
        passes.append(1)
        await step.run("ok", lambda: step_calls.append(1))
        if len(passes) == 1:
            raise RuntimeError("first pass fails")
        return "lucky"

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [second_time_lucky]):
        handle = await ow.run(second_time_lucky)
        assert await handle.result(timeout="5s") == "lucky"

    run = await get_run(backend, handle.id)
    assert (run.status, run.attempts) == ("completed", 2)
    assert len(passes) == 2
    assert len(step_calls) == 1, "the completed step stays memoized across the retry"


async def test_a_workflow_retry_policy_gives_up_after_its_attempts(backend: Any) -> None:
    passes: list[int] = []

    @workflow(retry_policy=RetryPolicy(maximum_attempts=2, initial_interval="10ms"))
    async def never_lucky() -> None:
        passes.append(1)
        raise RuntimeError(f"pass {len(passes)} fails")

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [never_lucky]):
        handle = await ow.run(never_lucky)
        with pytest.raises(WorkflowFailedError) as raised:
            await handle.result(timeout="5s")

    assert raised.value.error["message"] == "pass 2 fails"
    assert len(passes) == 2
    assert (await get_run(backend, handle.id)).attempts == 2


# -- deadlines --------------------------------------------------------------------------


async def test_a_run_past_its_deadline_is_failed_and_never_executed(backend: Any) -> None:
    calls: list[int] = []

    @workflow
    async def late() -> None:
        calls.append(1)

    ow = OpenWorkflow(backend)
    handle = await ow.run(late, deadline_at=datetime.now(UTC) - timedelta(seconds=1))
    async with idle_worker(backend, [late]) as worker:
        assert await worker.tick() == 0

    run = await get_run(backend, handle.id)
    assert run.status == "failed"
    assert run.error == {"message": "Workflow run deadline exceeded"}
    assert run.finished_at is not None
    assert (run.available_at, run.worker_id) == (None, None)
    assert calls == []
    with pytest.raises(WorkflowFailedError, match="Workflow run deadline exceeded"):
        await handle.result(timeout="1s")


async def test_a_step_retry_past_the_deadline_fails_the_run(backend: Any) -> None:
    calls: list[int] = []

    def fails() -> None:
        calls.append(1)
        raise RuntimeError("transient")

    @workflow
    async def hurried(step: Step) -> None:
        await step.run("call", fails, retry_policy=RetryPolicy(initial_interval="1s"))

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [hurried]):
        handle = await ow.run(hurried, deadline_at="500ms")
        with pytest.raises(WorkflowFailedError) as raised:
            await handle.result(timeout="5s")

    # The retry would start after the deadline: the run fails with the step's error.
    assert raised.value.error["message"] == "transient"
    run = await get_run(backend, handle.id)
    assert (run.status, run.attempts) == ("failed", 1)
    assert run.finished_at is not None and run.deadline_at is not None
    assert run.finished_at < run.deadline_at
    assert len(calls) == 1
    steps = await list_steps(backend, handle.id)
    assert [step.status for step in steps] == ["failed"]


# -- cancel during execution ------------------------------------------------------------


async def test_canceling_while_a_step_runs_persists_nothing_more(backend: Any) -> None:
    started = threading.Event()
    release = threading.Event()
    finished = threading.Event()
    after_calls: list[int] = []

    def slow() -> str:
        started.set()
        release.wait(5)
        finished.set()
        return "too late"

    @workflow
    async def cancel_me(step: Step) -> str:
        await step.run("slow", slow)
        await step.run("after", lambda: after_calls.append(1))
        return "done"

    ow = OpenWorkflow(backend)
    # No heartbeat during the test: only the write fencing protects the run.
    async with running_worker(backend, [cancel_me], heartbeat_interval="1h") as worker:
        try:
            handle = await ow.run(cancel_me)
            await wait_until(started.is_set, message="the step body to start")
            await wait_for_running_step(backend, handle.id, "slow")
            canceled = await handle.cancel()
            assert canceled.status == "canceled"
            steps_at_cancel = await list_steps(backend, handle.id)

            release.set()
            await wait_until(finished.is_set, message="the step body to finish")
            await wait_idle(worker)
        finally:
            release.set()

    assert await get_run(backend, handle.id) == canceled, "nothing was written after the cancel"
    steps = await list_steps(backend, handle.id)
    assert steps == steps_at_cancel
    # The cancel closed the running step; the body finishing later wrote nothing.
    assert [(step.step_name, step.status, step.output) for step in steps] == [
        ("slow", "failed", None)
    ]
    assert after_calls == []
    assert (canceled.worker_id, canceled.available_at, canceled.output) == (None, None, None)
    assert canceled.finished_at is not None
    with pytest.raises(WorkflowCanceledError):
        await handle.result(timeout="1s")


# -- limits and payloads -----------------------------------------------------------------


async def test_more_than_1000_step_attempts_fail_the_run(backend: Any) -> None:
    calls: list[int] = []

    async def counted() -> None:
        calls.append(1)

    @workflow
    async def too_many(step: Step) -> None:
        for index in range(1001):
            await step.run(f"step-{index}", counted)

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [too_many]):
        handle = await ow.run(too_many)
        with pytest.raises(WorkflowFailedError) as raised:
            await handle.result(timeout="30s")

    assert raised.value.error == {
        "name": "StepLimitExceededError",
        "message": "Exceeded the step limit of 1000 attempts (current count: 1000)",
        "code": "STEP_LIMIT_EXCEEDED",
        "limit": 1000,
        "stepCount": 1000,
    }
    assert len(calls) == 1000
    steps = await list_steps(backend, handle.id)
    assert len(steps) == 1000
    assert all(step.status == "completed" for step in steps)
    assert (await get_run(backend, handle.id)).attempts == 1


async def test_exactly_1000_step_attempts_complete_and_replay(backend: Any) -> None:
    @workflow
    async def at_the_limit(step: Step) -> int:
        for index in range(999):
            await step.run(f"step-{index}", noop)
        await step.sleep("the-1000th", "1ms")  # parks: the replay loads exactly 1000 rows
        return 999

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [at_the_limit]):
        handle = await ow.run(at_the_limit)
        assert await handle.result(timeout="30s") == 999

    steps = await list_steps(backend, handle.id)
    assert len(steps) == 1000
    assert all(step.status == "completed" for step in steps)
    assert (await get_run(backend, handle.id)).attempts == 2


@pytest.mark.parametrize(
    ("value", "type_name"),
    [({1, 2}, "set"), (object(), "object"), ({1: "one"}, "int")],
    ids=["set", "object", "int-key"],
)
async def test_a_step_result_that_is_not_json_fails_the_run(
    backend: Any, value: Any, type_name: str
) -> None:
    @workflow
    async def bad_step(step: Step) -> None:
        await step.run("unstorable", lambda: value)

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [bad_step]):
        handle = await ow.run(bad_step)
        with pytest.raises(WorkflowFailedError) as raised:
            await handle.result(timeout="5s")

    error = raised.value.error
    assert error["name"] == "PayloadError"
    assert "step 'unstorable'" in error["message"]
    assert "workflow 'bad-step'" in error["message"]
    assert type_name in error["message"]
    steps = await list_steps(backend, handle.id)
    assert [(step.step_name, step.status) for step in steps] == [("unstorable", "failed")]
    assert steps[0].error["name"] == "PayloadError"
    assert (await get_run(backend, handle.id)).attempts == 1, "not retried"


async def test_a_workflow_result_that_is_not_json_fails_the_run(backend: Any) -> None:
    @workflow
    async def bad_return() -> object:
        return object()

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [bad_return]):
        handle = await ow.run(bad_return)
        with pytest.raises(WorkflowFailedError) as raised:
            await handle.result(timeout="5s")

    error = raised.value.error
    assert error["name"] == "PayloadError"
    assert "workflow 'bad-return'" in error["message"]
    assert "object" in error["message"]
    run = await wait_for_status(backend, handle.id, "failed")
    assert run.output is None


async def test_a_fresh_run_does_not_read_its_empty_history(backend: Any) -> None:
    """The claim says a run taken from pending has no step attempts: its first
    pass skips the history read; a later pass (after a durable sleep) reads it."""
    reads: list[str] = []

    class CountingReads(ProxyBackend):
        async def list_step_attempts(self, params: Any) -> Any:
            reads.append(params.workflow_run_id)
            return await self.inner.list_step_attempts(params)

    @workflow(name="history-reads")
    async def napping(step: Step) -> int:
        first = await step.run("first", lambda: 1)
        await step.sleep("nap", "50ms")
        return first + 1

    ow = OpenWorkflow(backend)
    async with running_worker(CountingReads(backend), [napping]):
        handle = await ow.run(napping)
        assert await handle.result(timeout="10s") == 2
    assert reads == [handle.id]  # the second pass only
