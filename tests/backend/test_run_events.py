"""set_run_event and get_run_event: the latest value a running run published under a key."""

from __future__ import annotations

from typing import Any

import pytest

from openworkflow.core.backend import CompleteWorkflowRunParams
from openworkflow.core.events import GetRunEventParams, RunEvent, SetRunEventParams
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import WriteConflictError
from tests.backend.helpers import create_claimed_run, create_pending_run, new_id


async def _set(backend: Any, run: WorkflowRun, key: str, value: Any, worker: str = "") -> None:
    await backend.set_run_event(
        SetRunEventParams(
            workflow_run_id=run.id, worker_id=worker or str(run.worker_id), key=key, value=value
        )
    )


async def _get(backend: Any, run_id: str, key: str) -> RunEvent | None:
    event = await backend.get_run_event(GetRunEventParams(workflow_run_id=run_id, key=key))
    assert event is None or isinstance(event, RunEvent)
    return event


async def test_set_then_get_returns_the_value(backend: Any) -> None:
    run = await create_claimed_run(backend)
    await _set(backend, run, "progress", {"done": 1, "of": [2, "x"]})
    event = await _get(backend, run.id, "progress")
    assert event is not None
    assert (event.key, event.value) == ("progress", {"done": 1, "of": [2, "x"]})
    assert event.updated_at is not None


async def test_a_null_value_is_set_not_missing(backend: Any) -> None:
    run = await create_claimed_run(backend)
    await _set(backend, run, "answer", None)
    event = await _get(backend, run.id, "answer")
    assert event is not None and event.value is None


async def test_setting_a_key_again_overwrites_it(backend: Any) -> None:
    run = await create_claimed_run(backend)
    await _set(backend, run, "progress", 1)
    first = await _get(backend, run.id, "progress")
    await _set(backend, run, "progress", 2)
    await _set(backend, run, "other", "kept apart")
    latest = await _get(backend, run.id, "progress")
    assert first is not None and latest is not None
    assert (first.value, latest.value) == (1, 2)
    assert latest.updated_at >= first.updated_at
    other = await _get(backend, run.id, "other")
    assert other is not None and other.value == "kept apart"


async def test_a_missing_key_or_run_reads_none(backend: Any) -> None:
    run = await create_claimed_run(backend)
    await _set(backend, run, "progress", 1)
    assert await _get(backend, run.id, "absent") is None
    assert await _get(backend, new_id(), "progress") is None


async def test_events_are_per_run(backend: Any) -> None:
    first = await create_claimed_run(backend)
    second = await create_claimed_run(backend)
    await _set(backend, first, "progress", "first")
    assert await _get(backend, second.id, "progress") is None


async def test_a_worker_that_does_not_own_the_run_is_refused(backend: Any) -> None:
    run = await create_claimed_run(backend)
    with pytest.raises(WriteConflictError):
        await _set(backend, run, "progress", 1, worker="another-worker")
    assert await _get(backend, run.id, "progress") is None


async def test_a_run_not_running_is_refused(backend: Any) -> None:
    finished = await create_claimed_run(backend)
    await _set(backend, finished, "progress", 1)
    await backend.complete_workflow_run(
        CompleteWorkflowRunParams(
            workflow_run_id=finished.id, worker_id=str(finished.worker_id), output=None
        )
    )
    with pytest.raises(WriteConflictError):
        await _set(backend, finished, "progress", 2)
    event = await _get(backend, finished.id, "progress")
    assert event is not None and event.value == 1  # the refused write changed nothing
    pending = await create_pending_run(backend)
    with pytest.raises(WriteConflictError):
        await _set(backend, pending, "progress", 1, worker="w1")
    assert await _get(backend, pending.id, "progress") is None


async def test_list_returns_every_key_of_the_run(backend: Any) -> None:
    run = await create_claimed_run(backend)
    other = await create_claimed_run(backend)
    await _set(backend, run, "progress", 1)
    await _set(backend, run, "answer", {"text": "42"})
    await _set(backend, run, "progress", 2)
    await _set(backend, other, "elsewhere", True)
    listed = await backend.list_run_events(run.id)
    assert [(event.key, event.value) for event in listed] == [
        ("answer", {"text": "42"}),
        ("progress", 2),
    ]
    assert await backend.list_run_events(new_id()) == []
