"""``step.stream`` / ``handle.stream``: ordered items a run publishes, read from the first.

End to end with real workers on every backend: readers that connect late or
early, replays (a run parked on a signal passes again over its earlier
appends), more items than the step history allows, calls awaited out of order,
and the sync iterator in a second client.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openworkflow import OpenWorkflow, Step, SyncOpenWorkflow, workflow
from openworkflow.errors import PayloadError, WorkflowRunNotFoundError
from tests.fixtures.backends import backend_url
from tests.worker.helpers import list_steps, new_id, running_worker, wait_for_parked


@workflow(name="stream-in-two-parts")
async def stream_in_two_parts(step: Step) -> str:
    for i in range(3):
        await step.stream("progress", {"part": 1, "i": i})
    # Parks the run: the next pass replays the first three appends, which
    # must not write again.
    await step.wait_for_signal("next", timeout="1h")
    for i in range(2):
        await step.stream("progress", {"part": 2, "i": i})
    await step.stream("log", "done")
    return "done"


@workflow(name="stream-many")
async def stream_many(input: int, step: Step) -> int:
    for i in range(input):
        await step.stream("numbers", i)
    return input


@workflow(name="stream-out-of-order")
async def stream_out_of_order(step: Step) -> str:
    # Positions are taken when the calls are made, not when they are awaited.
    first, second, third = (step.stream("letters", letter) for letter in "abc")
    await third
    await asyncio.gather(second, first)
    return "ok"


@workflow(name="stream-bad-items")
async def stream_bad_items(step: Step) -> list[str]:
    refused = []
    for key, value in (("", 1), ("ok", object()), (7, 1)):
        try:
            await step.stream(key, value)  # type: ignore[arg-type]
        except (TypeError, PayloadError) as error:
            refused.append(type(error).__name__)
    return refused


def _count_appends(backend: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    calls: list[tuple[str, int]] = []
    original = backend.append_run_stream

    async def spy(params: Any) -> bool:
        calls.append((params.key, params.seq))
        return bool(await original(params))

    monkeypatch.setattr(backend, "append_run_stream", spy)
    return calls


async def _collect(handle: Any, key: str) -> list[Any]:
    return [item async for item in handle.stream(key)]


async def test_early_and_late_readers_get_every_item_once_in_order(
    backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    appends = _count_appends(backend, monkeypatch)
    ow = OpenWorkflow(backend)
    handle = await ow.run(stream_in_two_parts)
    early = asyncio.create_task(_collect(handle, "progress"))
    async with running_worker(backend, [stream_in_two_parts]):
        await wait_for_parked(backend, handle.id)
        assert not early.done()  # the run goes on: the reader waits for more
        await handle.signal("next")
        assert await handle.result(timeout="10s") == "done"
        expected = [{"part": 1, "i": i} for i in range(3)] + [{"part": 2, "i": i} for i in range(2)]
        assert await asyncio.wait_for(early, 10) == expected
    assert await _collect(handle, "progress") == expected  # a reader after the run ended
    assert await _collect(ow.handle(handle.id), "log") == ["done"]
    assert await _collect(handle, "never-written") == []
    # Two passes: every position written once (the replay wrote nothing again).
    assert appends == [("progress", seq) for seq in range(1, 6)] + [("log", 1)]
    assert [step.step_name for step in await list_steps(backend, handle.id)] == ["next"]


async def test_a_stream_may_outgrow_the_step_history(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(stream_many, 1_200)
    async with running_worker(backend, [stream_many]):
        items = await asyncio.wait_for(_collect(handle, "numbers"), 60)
        assert await handle.result(timeout="10s") == 1_200
    assert items == list(range(1_200))


async def test_calls_awaited_out_of_order_are_read_in_call_order(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(stream_out_of_order)
    async with running_worker(backend, [stream_out_of_order]):
        items = await asyncio.wait_for(_collect(handle, "letters"), 10)
        assert await handle.result(timeout="10s") == "ok"
    assert items == ["a", "b", "c"]


async def test_bad_keys_and_items_raise_in_the_workflow(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(stream_bad_items)
    async with running_worker(backend, [stream_bad_items]):
        assert await handle.result(timeout="10s") == ["TypeError", "PayloadError", "TypeError"]
    assert await _collect(handle, "ok") == []


async def test_a_reader_of_a_missing_run_or_with_a_bad_key_raises(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    with pytest.raises(WorkflowRunNotFoundError):
        await _collect(ow.handle(new_id()), "progress")
    with pytest.raises(TypeError, match="stream key"):
        ow.handle(new_id()).stream("")


async def test_a_reader_may_stop_early(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(stream_many, 50)
    async with running_worker(backend, [stream_many]):
        stream = handle.stream("numbers")
        assert [await anext(stream) for _ in range(3)] == [0, 1, 2]
        await stream.aclose()  # type: ignore[attr-defined]
        assert await handle.result(timeout="10s") == 50


async def test_the_sync_iterator_reads_in_another_client(backend: Any, backend_kind: str) -> None:
    if backend_kind == "sqlite_memory":
        pytest.skip("a ':memory:' SQLite database cannot be opened by a second client")
    url = backend_url(backend_kind, backend)
    assert url is not None
    namespace_id = backend.namespace_id
    ow = OpenWorkflow(backend)
    handle = await ow.run(stream_in_two_parts)

    def blocking_reader() -> list[Any]:
        with SyncOpenWorkflow(url, namespace_id=namespace_id) as client:
            reader = client.handle(handle.id)
            first_two = []
            for item in reader.stream("progress"):  # stops early: the generator cleans up
                first_two.append(item)
                if len(first_two) == 2:
                    break
            return first_two + list(reader.stream("progress"))

    async with running_worker(backend, [stream_in_two_parts]):
        reading = asyncio.create_task(asyncio.to_thread(blocking_reader))
        await wait_for_parked(backend, handle.id)
        await handle.signal("next")
        items = await asyncio.wait_for(reading, 30)
    assert [item["i"] for item in items] == [0, 1, 0, 1, 2, 0, 1]
