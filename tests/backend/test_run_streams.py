"""append_run_stream, read_run_stream and the extents: ordered items a running run appends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openworkflow.core.backend import CompleteWorkflowRunParams
from openworkflow.core.streams import (
    AppendRunStreamParams,
    ReadRunStreamParams,
    RunStreamExtent,
    RunStreamItem,
)
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import WriteConflictError
from tests.backend.helpers import create_claimed_run, create_pending_run, new_id


async def _append(
    backend: Any, run: WorkflowRun, key: str, seq: int, value: Any, worker: str = ""
) -> bool:
    appended = await backend.append_run_stream(
        AppendRunStreamParams(
            workflow_run_id=run.id,
            worker_id=worker or str(run.worker_id),
            key=key,
            seq=seq,
            value=value,
        )
    )
    assert isinstance(appended, bool)
    return appended


async def _read(
    backend: Any, run_id: str, key: str, after: int = 0, limit: int = 1000
) -> list[Any]:
    items = await backend.read_run_stream(
        ReadRunStreamParams(workflow_run_id=run_id, key=key, after_seq=after, limit=limit)
    )
    assert all(isinstance(item, RunStreamItem) for item in items)
    return [(item.seq, item.value) for item in items]


async def test_items_read_back_in_position_order(backend: Any) -> None:
    run = await create_claimed_run(backend)
    for seq, value in [(2, {"b": [1, "x"]}), (1, "a"), (3, None)]:
        assert await _append(backend, run, "progress", seq, value)
    assert await _read(backend, run.id, "progress") == [(1, "a"), (2, {"b": [1, "x"]}), (3, None)]
    assert await _read(backend, run.id, "progress", after=1) == [(2, {"b": [1, "x"]}), (3, None)]
    assert await _read(backend, run.id, "progress", after=0, limit=2) == [
        (1, "a"),
        (2, {"b": [1, "x"]}),
    ]
    assert await _read(backend, run.id, "progress", after=3) == []


async def test_appending_a_stored_position_is_a_no_op(backend: Any) -> None:
    run = await create_claimed_run(backend)
    assert await _append(backend, run, "tokens", 1, "first")
    assert not await _append(backend, run, "tokens", 1, "replayed")  # a replay: first write wins
    assert await _read(backend, run.id, "tokens") == [(1, "first")]


async def test_streams_are_per_key_and_per_run(backend: Any) -> None:
    first = await create_claimed_run(backend)
    second = await create_claimed_run(backend)
    await _append(backend, first, "a", 1, "first-a")
    await _append(backend, first, "b", 1, "first-b")
    await _append(backend, second, "a", 1, "second-a")
    assert await _read(backend, first.id, "a") == [(1, "first-a")]
    assert await _read(backend, first.id, "b") == [(1, "first-b")]
    assert await _read(backend, second.id, "a") == [(1, "second-a")]
    assert await _read(backend, new_id(), "a") == []


async def test_extents_count_items_and_tell_gaps(backend: Any) -> None:
    run = await create_claimed_run(backend)
    empty = await backend.get_run_stream_extent(run.id, "progress")
    assert (empty.key, empty.count, empty.last_seq, empty.updated_at) == ("progress", 0, 0, None)
    for seq in (1, 2, 4):
        await _append(backend, run, "progress", seq, seq)
    await _append(backend, run, "log", 1, "line")
    extent = await backend.get_run_stream_extent(run.id, "progress")
    assert isinstance(extent, RunStreamExtent)
    assert (extent.count, extent.last_seq) == (3, 4)  # a gap at 3
    assert extent.updated_at is not None
    listed = await backend.list_run_streams(run.id)
    assert [(e.key, e.count, e.last_seq) for e in listed] == [("log", 1, 1), ("progress", 3, 4)]
    assert await backend.list_run_streams(new_id()) == []


async def test_a_worker_that_does_not_own_the_run_is_refused(backend: Any) -> None:
    run = await create_claimed_run(backend)
    with pytest.raises(WriteConflictError):
        await _append(backend, run, "progress", 1, "x", worker="another-worker")
    assert await _read(backend, run.id, "progress") == []


async def test_a_run_not_running_is_refused(backend: Any) -> None:
    finished = await create_claimed_run(backend)
    await _append(backend, finished, "progress", 1, "kept")
    await backend.complete_workflow_run(
        CompleteWorkflowRunParams(
            workflow_run_id=finished.id, worker_id=str(finished.worker_id), output=None
        )
    )
    with pytest.raises(WriteConflictError):
        await _append(backend, finished, "progress", 2, "late")
    with pytest.raises(WriteConflictError):  # even a stored position: the fence comes first
        await _append(backend, finished, "progress", 1, "kept")
    assert await _read(backend, finished.id, "progress") == [(1, "kept")]
    pending = await create_pending_run(backend)
    with pytest.raises(WriteConflictError):
        await _append(backend, pending, "progress", 1, "x", worker="w1")


async def test_concurrent_appends_of_one_position_store_one_item(backend: Any) -> None:
    run = await create_claimed_run(backend)
    results = await asyncio.gather(
        *(_append(backend, run, "race", 1, f"writer-{i}") for i in range(8))
    )
    assert sorted(results) == [False] * 7 + [True]
    items = await _read(backend, run.id, "race")
    assert len(items) == 1 and items[0][0] == 1


async def test_an_append_wakes_the_runs_readers_in_this_process(backend: Any) -> None:
    run = await create_claimed_run(backend)
    notifier = backend.notifier
    waiter = notifier.watch_run(run.id)
    try:
        await _append(backend, run, "progress", 1, "x")
        await asyncio.wait_for(asyncio.shield(waiter), 10)
    finally:
        notifier.unwatch_run(run.id, waiter)
