"""Creating many runs at once (``create_workflow_runs``) and grouped single creates.

``ow.run_many`` writes its runs with one call, all or none; concurrent
``create_workflow_run`` calls of one backend share one write (a group
commit) in which a failing run fails alone. Both keep the idempotency rule
of one create at a time: a key (same workflow, 24 h) names one run, whether
created earlier, in the same batch, or by a concurrent caller.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from openworkflow.core.backend import CreateWorkflowRunParams, WorkflowRunCounts
from openworkflow.core.run_batch import RUN_BATCH_CHUNK
from openworkflow.errors import BackendClosedError
from tests.backend.helpers import create_pending_run, get_run, in_one_year, new_id, now


def _params(workflow_name: str = "batch", **fields: Any) -> CreateWorkflowRunParams:
    return CreateWorkflowRunParams(workflow_name=workflow_name, **fields)


def _dangling(**fields: Any) -> CreateWorkflowRunParams:
    """A run whose parent step attempt does not exist: the foreign key refuses it."""
    return _params(
        parent_step_attempt_namespace_id="no-such-namespace",
        parent_step_attempt_id=new_id(),
        **fields,
    )


async def _pending(backend: Any) -> int:
    counts: WorkflowRunCounts = await backend.count_workflow_runs()
    return counts.pending


async def test_runs_come_back_in_order_with_their_own_fields(backend: Any) -> None:
    later, deadline = in_one_year(), now() + timedelta(days=2)
    params = [
        _params(input={"n": 0}),
        _params("other", version="v2", input=[1, 2], priority=7, available_at=later),
        _params(input=None, deadline_at=deadline, concurrency_key="k", concurrency_limit=3),
    ]

    runs = await backend.create_workflow_runs(params)

    assert [run.workflow_name for run in runs] == ["batch", "other", "batch"]
    assert [run.input for run in runs] == [{"n": 0}, [1, 2], None]
    assert [run.priority for run in runs] == [0, 7, 0]
    assert [run.version for run in runs] == [None, "v2", None]
    assert runs[1].available_at == later and runs[2].deadline_at == deadline
    assert (runs[2].concurrency_key, runs[2].concurrency_limit) == ("k", 3)
    assert all(run.status == "pending" and run.attempts == 0 for run in runs)
    assert len({run.id for run in runs}) == 3
    for run in runs:
        assert await get_run(backend, run.id) == run
    assert runs[0].available_at is not None and runs[0].available_at <= now()


async def test_an_empty_batch_writes_nothing(backend: Any) -> None:
    assert await backend.create_workflow_runs([]) == []
    assert await _pending(backend) == 0


async def test_items_sharing_a_key_get_the_run_of_the_first(backend: Any) -> None:
    key = new_id()
    runs = await backend.create_workflow_runs(
        [
            _params(idempotency_key=key, input=1),
            _params(input=2),
            _params(idempotency_key=key, input=3),
            _params("other", idempotency_key=key, input=4),  # another workflow: its own run
            _params(idempotency_key="", input=5),  # the empty key is a key too
            _params(idempotency_key="", input=6),
        ]
    )

    assert runs[0] == runs[2] and runs[0].input == 1
    assert runs[4] == runs[5] and runs[4].input == 5
    assert len({runs[0].id, runs[1].id, runs[3].id, runs[4].id}) == 4
    assert await _pending(backend) == 4


async def test_a_key_used_by_an_earlier_run_returns_that_run(backend: Any) -> None:
    key = new_id()
    earlier = await create_pending_run(backend, workflow_name="batch", idempotency_key=key)

    runs = await backend.create_workflow_runs(
        [_params(input=1), _params(idempotency_key=key, input=2, tags={"t": "new"})]
    )

    assert runs[1] == earlier
    assert await backend.get_run_tags(earlier.id) == {}  # the first run keeps its own tags
    assert runs[0].id != earlier.id and await _pending(backend) == 2
    again = await backend.create_workflow_runs([_params(idempotency_key=key)])
    assert again == [earlier]


async def test_a_batch_larger_than_a_chunk_is_written_whole_and_in_order(backend: Any) -> None:
    count = 2 * RUN_BATCH_CHUNK + 500
    keys = {0: "a", 1500: "a", RUN_BATCH_CHUNK - 1: "b", RUN_BATCH_CHUNK: "b"}
    params = [_params(input=index, idempotency_key=keys.get(index)) for index in range(count)]

    runs = await backend.create_workflow_runs(params)

    assert len(runs) == count
    assert runs[1500] == runs[0] and runs[RUN_BATCH_CHUNK] == runs[RUN_BATCH_CHUNK - 1]
    shared = {1500, RUN_BATCH_CHUNK}
    assert [run.input for index, run in enumerate(runs) if index not in shared] == [
        index for index in range(count) if index not in shared
    ]
    assert len({run.id for run in runs}) == count - 2
    assert await _pending(backend) == count - 2


async def test_tags_are_written_with_each_new_run(backend: Any) -> None:
    runs = await backend.create_workflow_runs(
        [
            _params(tags={"customer": "c-1", "plan": "pro"}),
            _params(),
            _params(tags={"customer": "c-2"}),
        ]
    )

    assert [await backend.get_run_tags(run.id) for run in runs] == [
        {"customer": "c-1", "plan": "pro"},
        {},
        {"customer": "c-2"},
    ]


async def test_a_failing_item_writes_none_of_the_batch(backend: Any) -> None:
    key = new_id()
    with pytest.raises(Exception):  # noqa: B017 - each backend has its own error type
        await backend.create_workflow_runs(
            [_params(idempotency_key=key, tags={"t": "1"}), _params(), _dangling()]
        )

    assert await _pending(backend) == 0
    created = await backend.create_workflow_runs([_params(idempotency_key=key, input="x")])
    assert created[0].input == "x"  # the key was not taken by the failed batch


async def test_concurrent_single_creates_all_commit_with_distinct_ids(backend: Any) -> None:
    runs = await asyncio.gather(
        *(create_pending_run(backend, workflow_name="batch", input=n) for n in range(200))
    )

    assert [run.input for run in runs] == list(range(200))
    assert len({run.id for run in runs}) == 200
    assert await _pending(backend) == 200


async def test_concurrent_creates_and_batches_with_one_key_make_one_run(backend: Any) -> None:
    key = new_id()
    singles = [
        create_pending_run(backend, workflow_name="batch", idempotency_key=key, input=n)
        for n in range(40)
    ]
    batches = [
        backend.create_workflow_runs([_params(idempotency_key=key), _params(input="free")])
        for _ in range(10)
    ]

    results = await asyncio.gather(*singles, *batches)

    keyed = [*results[:40], *(batch[0] for batch in results[40:])]
    assert len({run.id for run in keyed}) == 1
    assert await _pending(backend) == 1 + 10


async def test_a_failing_single_create_fails_alone(backend: Any) -> None:
    key = new_id()
    outcomes = await asyncio.gather(
        create_pending_run(backend, workflow_name="batch", input=1),
        backend.create_workflow_run(_dangling(idempotency_key=key, tags={"t": "1"})),
        create_pending_run(backend, workflow_name="batch", input=3, tags={"t": "3"}),
        return_exceptions=True,
    )

    assert isinstance(outcomes[1], Exception)
    assert "foreign key" in str(outcomes[1]).lower()
    assert [outcome.input for outcome in (outcomes[0], outcomes[2])] == [1, 3]
    assert await backend.get_run_tags(outcomes[2].id) == {"t": "3"}
    assert await _pending(backend) == 2
    assert (await backend.create_workflow_run(_params(idempotency_key=key))).idempotency_key == key


async def test_a_stopped_backend_refuses_creates(backend: Any) -> None:
    await backend.stop()

    with pytest.raises(BackendClosedError):
        await backend.create_workflow_runs([_params()])
    with pytest.raises(BackendClosedError):
        await backend.create_workflow_run(_params())


@pytest.mark.parametrize("how", ["batch", "single"])
async def test_new_runs_wake_waiting_workers(backend: Any, how: str) -> None:
    if hasattr(backend, "open"):
        await backend.open()  # PostgreSQL: listen before the runs are created
    notifier = backend.notifier
    waiter = notifier.watch_work()
    try:
        await asyncio.sleep(0.05)
        assert not waiter.done()
        if how == "batch":
            await backend.create_workflow_runs([_params(), _params()])
        else:
            await backend.create_workflow_run(_params())
        await asyncio.wait_for(asyncio.shield(waiter), 5)
    finally:
        notifier.unwatch_work(waiter)
