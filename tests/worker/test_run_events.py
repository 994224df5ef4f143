"""``step.set_event`` / ``handle.get_event``: values a run publishes, read while it runs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openworkflow import OpenWorkflow, Step, SyncOpenWorkflow, workflow
from openworkflow.errors import EventNotSetError, PayloadError, ResultTimeoutError
from tests.fixtures.backends import backend_url
from tests.support.waiting import wait_until
from tests.worker.helpers import list_steps, running_worker, wait_for_parked


@workflow(name="event-progress")
async def event_progress(step: Step) -> str:
    await step.set_event("progress", 1)
    # Parks the run: the next pass replays the first set, which must not write again.
    await step.wait_for_signal("next", timeout="1h")
    await step.set_event("progress", 2)
    await step.wait_for_signal("finish", timeout="1h")
    return "done"


@workflow(name="event-never-set")
async def event_never_set(step: Step) -> str:
    return "no events"


@workflow(name="event-bad-values")
async def event_bad_values(step: Step) -> list[str]:
    refused = []
    for key, value in (("", 1), ("ok", object())):
        try:
            await step.set_event(key, value)
        except (TypeError, PayloadError) as error:
            refused.append(type(error).__name__)
    return refused


def _count_sets(backend: Any, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    original = backend.set_run_event

    async def spy(params: Any) -> None:
        calls.append(params.value)
        await original(params)

    monkeypatch.setattr(backend, "set_run_event", spy)
    return calls


async def test_callers_see_each_value_while_the_run_goes_on(
    backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sets = _count_sets(backend, monkeypatch)
    ow = OpenWorkflow(backend)
    handle = await ow.run(event_progress)
    async with running_worker(backend, [event_progress]):
        assert await handle.get_event("progress", timeout="10s") == 1
        await wait_for_parked(backend, handle.id)
        await handle.signal("next")

        async def second_value() -> bool:
            return bool(await handle.get_event("progress") == 2)

        await wait_until(second_value, message="the second value of progress")
        assert (await handle.status()) not in {"completed", "failed", "canceled"}
        await handle.signal("finish")
        assert await handle.result(timeout="10s") == "done"
    # Three passes, two set steps: each value written once (replays do not write again).
    assert sets == [1, 2]
    names = [step.step_name for step in await list_steps(backend, handle.id)]
    assert [name for name in names if name.startswith("event:")] == [
        "event:progress",
        "event:progress:1",
    ]
    assert await handle.get_event("progress") == 2  # kept after the run finished


async def test_a_run_that_finished_without_the_key_raises(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(event_never_set)
    async with running_worker(backend, [event_never_set]):
        assert await handle.result(timeout="10s") == "no events"
    with pytest.raises(EventNotSetError, match=rf"{handle.id}.*'progress'") as caught:
        await asyncio.wait_for(handle.get_event("progress"), 10)  # no timeout: must not hang
    assert (caught.value.workflow_run_id, caught.value.key) == (handle.id, "progress")


async def test_no_value_within_the_timeout_raises(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(event_progress)  # no worker: never set
    with pytest.raises(ResultTimeoutError, match="progress"):
        await handle.get_event("progress", timeout="150ms")
    with pytest.raises(TypeError, match="event key"):
        await handle.get_event("")


async def test_bad_keys_and_values_raise_in_the_workflow(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(event_bad_values)
    async with running_worker(backend, [event_bad_values]):
        assert await handle.result(timeout="10s") == ["TypeError", "PayloadError"]
    with pytest.raises(EventNotSetError):
        await handle.get_event("ok")


async def test_the_sync_handle_reads_the_event(backend: Any, backend_kind: str) -> None:
    if backend_kind == "sqlite_memory":
        pytest.skip("a ':memory:' SQLite database cannot be opened by a second client")
    url = backend_url(backend_kind, backend)
    assert url is not None
    namespace_id = backend.namespace_id
    ow = OpenWorkflow(backend)
    handle = await ow.run(event_progress)

    def blocking_reader() -> Any:
        with SyncOpenWorkflow(url, namespace_id=namespace_id) as client:
            return client.handle(handle.id).get_event("progress", timeout="10s")

    async with running_worker(backend, [event_progress]):
        assert await asyncio.to_thread(blocking_reader) == 1
        await ow.cancel(handle.id)
