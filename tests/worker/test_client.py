"""The client: starting runs, idempotency, results, cancel, and the blocking client."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from openworkflow import (
    InputValidationError,
    OpenWorkflow,
    ResultTimeoutError,
    Step,
    SyncOpenWorkflow,
    WorkflowCanceledError,
    WorkflowFailedError,
    declare_workflow,
    workflow,
)
from openworkflow.errors import (
    InvalidDurationError,
    InvalidRunStateError,
    PayloadError,
    WorkflowRunNotFoundError,
)
from tests.fixtures.backends import backend_url
from tests.worker.helpers import (
    get_run,
    idle_worker,
    list_steps,
    now,
    running_worker,
    tick_and_settle,
    wait_for_parked,
)


class Signup(BaseModel):
    user_id: str
    plan: str = "free"


@workflow
async def welcome(input: Signup, step: Step) -> dict:
    greeting = await step.run("greet", lambda: f"welcome {input.user_id}")
    return {"greeting": greeting, "plan": input.plan}


@workflow
async def echo(input: Any) -> Any:
    return input


@workflow
async def explode() -> None:
    raise RuntimeError("boom")


@workflow
async def napper(step: Step) -> str:
    await step.sleep("nap", "1h")
    return "rested"


# -- idempotency -------------------------------------------------------------------------


async def test_the_same_idempotency_key_returns_the_same_run(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    first = await ow.run(echo, {"n": 1}, idempotency_key="order-1")
    again = await ow.run(echo, {"n": 2}, idempotency_key="order-1")
    other_key = await ow.run(echo, {"n": 3}, idempotency_key="order-2")
    other_workflow = await ow.run(welcome, {"user_id": "u"}, idempotency_key="order-1")
    no_key = [await ow.run(echo, {"n": 4}) for _ in range(2)]

    assert again.id == first.id
    assert (await get_run(backend, first.id)).input == {"n": 1}, "the first run's input wins"
    assert len({first.id, other_key.id, other_workflow.id, *(h.id for h in no_key)}) == 5
    assert len((await ow.list_runs()).data) == 5

    async with running_worker(backend, [echo, welcome], concurrency=5):
        assert await first.result(timeout="5s") == {"n": 1}
    # A finished run is still returned for its key.
    after = await ow.run(echo, {"n": 5}, idempotency_key="order-1")
    assert after.id == first.id
    assert await after.result(timeout="1s") == {"n": 1}


async def test_concurrent_runs_with_one_key_make_one_run(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    handles = await asyncio.gather(
        *(ow.run(echo, {"n": n}, idempotency_key="same") for n in range(10))
    )
    assert len({handle.id for handle in handles}) == 1
    assert len((await ow.list_runs(workflow_name="echo")).data) == 1


# -- starting runs ---------------------------------------------------------------------------


async def test_runs_start_from_a_workflow_a_spec_or_a_name(backend: Any) -> None:
    spec = declare_workflow("declared", schema=Signup)

    @spec.implement
    async def declared(input: Signup) -> str:
        return f"declared for {input.user_id} on {input.plan}"

    ow = OpenWorkflow(backend)
    from_spec = await ow.run(spec, {"user_id": "u1", "plan": "pro"})
    from_name = await ow.run("declared", {"user_id": "u2"})
    with pytest.raises(InputValidationError):
        await ow.run(spec, {"plan": "pro"})  # the spec's schema applies in the caller

    async with running_worker(backend, [declared], concurrency=2):
        assert await from_spec.result(timeout="5s") == "declared for u1 on pro"
        assert await from_name.result(timeout="5s") == "declared for u2 on free"


async def test_input_validation_happens_before_anything_is_written(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    with pytest.raises(InputValidationError) as raised:
        await ow.run(welcome, {"plan": "pro"})
    assert raised.value.workflow_name == "welcome"
    assert "user_id" in str(raised.value)

    with pytest.raises(PayloadError, match="cannot be stored as JSON"):
        await ow.run(echo, {"when": object()})

    with pytest.raises(InvalidDurationError):
        await ow.run(echo, {"n": 1}, available_at="soon")

    assert (await ow.list_runs()).data == []
    assert (await ow.counts()).pending == 0


async def test_a_model_input_is_stored_as_json(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(welcome, Signup(user_id="u1", plan="team"))
    stored = await get_run(backend, handle.id)
    assert stored.input == {"user_id": "u1", "plan": "team"}
    assert (stored.status, stored.attempts, stored.version) == ("pending", 0, None)
    async with running_worker(backend, [welcome]):
        assert await handle.result(timeout="5s") == {"greeting": "welcome u1", "plan": "team"}
    steps = await list_steps(backend, handle.id)
    assert [(step.step_name, step.output) for step in steps] == [("greet", "welcome u1")]


async def test_available_at_schedules_the_run(backend: Any, clock: Any) -> None:
    ow = OpenWorkflow(backend)
    before = now()
    handle = await ow.run(echo, "later", available_at="5m")
    run = await get_run(backend, handle.id)
    assert run.status == "pending"
    assert run.available_at is not None
    assert before + timedelta(minutes=5) <= run.available_at <= now() + timedelta(minutes=5)

    async with idle_worker(backend, [echo]) as worker:
        assert await worker.tick() == 0, "not due yet"
        clock.advance(timedelta(minutes=5, seconds=1))
        await tick_and_settle(worker, expected=1)
    assert await handle.result(timeout="1s") == "later"


async def test_the_version_can_be_chosen_per_run(backend: Any) -> None:
    @workflow(name="versioned", version="v1")
    async def versioned_v1(version: str | None) -> str | None:
        return version

    @workflow(name="versioned", version="v2")
    async def versioned_v2(version: str | None) -> str | None:
        return version

    ow = OpenWorkflow(backend)
    default = await ow.run(versioned_v1)
    chosen = await ow.run(versioned_v1, version="v2")
    assert (await get_run(backend, default.id)).version == "v1"
    assert (await get_run(backend, chosen.id)).version == "v2"
    async with running_worker(backend, [versioned_v1, versioned_v2], concurrency=2):
        assert await default.result(timeout="5s") == "v1"
        assert await chosen.result(timeout="5s") == "v2"


# -- results --------------------------------------------------------------------------------------


async def test_result_of_a_failed_run_raises_workflow_failed_error(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(explode)
    async with running_worker(backend, [explode]):
        with pytest.raises(WorkflowFailedError) as raised:
            await handle.result(timeout="5s")

    assert str(raised.value) == "Workflow explode failed: RuntimeError: boom"
    assert raised.value.workflow_run_id == handle.id
    assert raised.value.error["name"] == "RuntimeError"
    assert raised.value.error["message"] == "boom"
    assert await handle.status() == "failed"


async def test_result_times_out_and_the_run_goes_on(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(echo, "slow")
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(ResultTimeoutError) as raised:
        await handle.result(timeout="100ms")
    assert 0.1 <= loop.time() - began < 1.5
    assert isinstance(raised.value, TimeoutError)
    assert str(raised.value) == f"Timed out waiting for workflow run {handle.id} to finish"
    assert raised.value.workflow_run_id == handle.id
    assert await handle.status() == "pending"

    async with running_worker(backend, [echo]):
        assert await handle.result(timeout="5s") == "slow"


async def test_result_returns_promptly_after_completion(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    async with running_worker(backend, [echo]):
        handles = [await ow.run(echo, n) for n in range(5)]
        loop = asyncio.get_running_loop()
        began = loop.time()
        assert [await handle.result(timeout="5s") for handle in handles] == list(range(5))
        assert loop.time() - began < 1.0, "no coarse 1 s polling"


async def test_an_unknown_run_id_raises_not_found(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    missing = str(uuid.uuid4())
    with pytest.raises(WorkflowRunNotFoundError, match=f"Workflow run {missing} does not exist"):
        await ow.handle(missing).result(timeout="1s")
    with pytest.raises(WorkflowRunNotFoundError):
        await ow.handle(missing).status()
    with pytest.raises(WorkflowRunNotFoundError):
        await ow.cancel(missing)
    assert await ow.get_run(missing) is None


# -- cancel ---------------------------------------------------------------------------------------


async def test_cancel_a_pending_run_twice(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(echo, "never")
    canceled = await handle.cancel()
    assert canceled.status == "canceled"
    assert (canceled.worker_id, canceled.available_at) == (None, None)
    assert canceled.finished_at is not None

    again = await ow.cancel(handle.id)
    assert (again.id, again.status) == (handle.id, "canceled")

    with pytest.raises(WorkflowCanceledError) as raised:
        await handle.result(timeout="1s")
    assert str(raised.value) == "Workflow echo was canceled"
    assert raised.value.workflow_run_id == handle.id

    async with idle_worker(backend, [echo]) as worker:
        assert await worker.tick() == 0, "a canceled run is never claimed"
    assert await handle.status() == "canceled"


async def test_cancel_a_parked_run(backend: Any, clock: Any) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(napper)
    async with idle_worker(backend, [napper]) as worker:
        await tick_and_settle(worker, expected=1)
        await wait_for_parked(backend, handle.id)

        canceled = await handle.cancel()
        assert (canceled.status, canceled.worker_id, canceled.available_at) == (
            "canceled",
            None,
            None,
        )
        clock.advance(timedelta(hours=2))
        assert await worker.tick() == 0, "the timer of a canceled run does not resume it"

    assert await get_run(backend, handle.id) == canceled
    steps = await list_steps(backend, handle.id)
    # The cancel closed the sleep (a finished run keeps no attempt running).
    assert [(step.step_name, step.status) for step in steps] == [("nap", "failed")]
    with pytest.raises(WorkflowCanceledError):
        await handle.result(timeout="1s")


async def test_canceling_a_finished_run_raises(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    completed = await ow.run(echo, "done")
    failed = await ow.run(explode)
    async with running_worker(backend, [echo, explode], concurrency=2):
        assert await completed.result(timeout="5s") == "done"
        with pytest.raises(WorkflowFailedError):
            await failed.result(timeout="5s")

    with pytest.raises(
        InvalidRunStateError,
        match=f"Cannot cancel workflow run {completed.id} with status completed",
    ):
        await completed.cancel()
    with pytest.raises(
        InvalidRunStateError, match=f"Cannot cancel workflow run {failed.id} with status failed"
    ):
        await ow.cancel(failed.id)
    assert await completed.status() == "completed"
    assert await failed.status() == "failed"


# -- the blocking client --------------------------------------------------------------------------


async def test_sync_client_runs_and_waits_while_an_async_worker_runs(
    backend: Any, backend_kind: str
) -> None:
    if backend_kind == "sqlite_memory":
        pytest.skip(
            "a ':memory:' SQLite database lives in one connection, so a second client "
            "(the blocking one, with its own event loop) cannot open it"
        )
    url = backend_url(backend_kind, backend)
    assert url is not None
    namespace_id = backend.namespace_id

    def blocking_caller() -> dict[str, Any]:
        with SyncOpenWorkflow(url, namespace_id=namespace_id) as client:
            handle = client.run(welcome, {"user_id": "sync-user"})
            by_name = client.run("echo", {"from": "sync"}, idempotency_key="sync-key")
            output = handle.result(timeout="10s")
            echoed = client.handle(by_name.id).result(timeout="10s")
            pending = client.run(echo, "to cancel", available_at="1h")
            canceled = pending.cancel()
            with pytest.raises(WorkflowCanceledError):
                pending.result(timeout="1s")
            return {
                "output": output,
                "echoed": echoed,
                "status": handle.status(),
                "steps": [step.step_name for step in client.list_steps(handle.id).data],
                "same_key": client.run("echo", None, idempotency_key="sync-key").id == by_name.id,
                "canceled": canceled.status,
                "completed": client.counts().completed,
                "run_ids": {handle.id, by_name.id},
            }

    async with running_worker(backend, [welcome, echo], concurrency=2):
        seen = await asyncio.to_thread(blocking_caller)

    assert seen["output"] == {"greeting": "welcome sync-user", "plan": "free"}
    assert seen["echoed"] == {"from": "sync"}
    assert seen["status"] == "completed"
    assert seen["steps"] == ["greet"]
    assert seen["same_key"] is True
    assert seen["canceled"] == "canceled"
    assert seen["completed"] == 2
    # The async side sees the runs the blocking client made, in the same namespace.
    for run_id in seen["run_ids"]:
        assert (await get_run(backend, run_id)).status == "completed"


# -- retry ----------------------------------------------------------------------------------------


async def test_retry_resumes_a_failed_run_rerunning_only_failed_steps(backend: Any) -> None:
    from openworkflow import RetryPolicy, workflow

    calls = {"fetch": 0, "charge": 0}
    broken = {"on": True}

    def fetch() -> str:
        calls["fetch"] += 1
        return "data"

    def charge() -> str:
        calls["charge"] += 1
        if broken["on"]:
            raise RuntimeError("card service down")
        return "charged"

    @workflow(name="retry-me")
    async def retry_me(step: Step) -> list[str]:
        first = await step.run("fetch", fetch)
        second = await step.run(
            "charge", charge, retry_policy=RetryPolicy(maximum_attempts=2, initial_interval="10ms")
        )
        return [first, second]

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [retry_me]):
        handle = await ow.run(retry_me)
        with pytest.raises(WorkflowFailedError):
            await handle.result(timeout="10s")
        broken["on"] = False
        again = await ow.retry(handle.id)
        assert again.id == handle.id
        assert await again.result(timeout="10s") == ["data", "charged"]
    assert calls == {"fetch": 1, "charge": 3}
    with pytest.raises(InvalidRunStateError, match="only failed or canceled"):
        await ow.retry(handle.id)
