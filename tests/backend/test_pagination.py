"""listWorkflowRuns and listStepAttempts: order, filters and the cursor contract."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from openworkflow.core import clock as clock_module
from openworkflow.core.backend import (
    CompleteWorkflowRunParams,
    FailWorkflowRunParams,
    ListStepAttemptsParams,
    ListWorkflowRunsParams,
)
from openworkflow.core.cursor import DEFAULT_PAGE_SIZE
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_run import WorkflowRun
from tests.backend.helpers import (
    TERMINAL_RETRY_POLICY,
    claim,
    create_claimed_run,
    create_pending_run,
    create_step,
    new_id,
)

GAP_S = 0.01
"""Pause between creates so that ``created_at`` differs (timestamps are in ms)."""


async def _list(backend, **params) -> object:
    return await backend.list_workflow_runs(ListWorkflowRunsParams(**params))


async def _list_steps(backend, workflow_run_id: str, **params) -> object:
    return await backend.list_step_attempts(
        ListStepAttemptsParams(workflow_run_id=workflow_run_id, **params)
    )


def _ids(rows: list[WorkflowRun] | list[StepAttempt]) -> list[str]:
    return [row.id for row in rows]


def _decode(cursor: str) -> dict[str, str]:
    return json.loads(base64.b64decode(cursor))


async def _create_runs(backend, count: int) -> list[WorkflowRun]:
    runs = []
    for _ in range(count):
        runs.append(await create_pending_run(backend))
        await asyncio.sleep(GAP_S)
    return runs


async def _fail_next_pending(backend) -> str:
    worker_id = new_id()
    claimed = await claim(backend, worker_id)
    assert claimed is not None
    await backend.fail_workflow_run(
        FailWorkflowRunParams(
            workflow_run_id=claimed.id,
            worker_id=worker_id,
            error={"message": "failed run"},
            retry_policy=TERMINAL_RETRY_POLICY,
        )
    )
    return claimed.id


# -- listWorkflowRuns ---------------------------------------------------------


async def test_runs_are_listed_newest_first(backend) -> None:
    first = await create_pending_run(backend)
    await asyncio.sleep(GAP_S)
    second = await create_pending_run(backend)

    listed = await _list(backend)

    assert _ids(listed.data) == [second.id, first.id]
    assert listed.next is None
    assert listed.prev is None


async def test_runs_paginate_forward_and_back(backend) -> None:
    runs = await _create_runs(backend, 5)

    page1 = await _list(backend, limit=2)
    assert _ids(page1.data) == [runs[4].id, runs[3].id]
    assert page1.next is not None
    assert page1.prev is None

    page2 = await _list(backend, limit=2, after=page1.next)
    assert _ids(page2.data) == [runs[2].id, runs[1].id]
    assert page2.next is not None
    assert page2.prev is not None

    page3 = await _list(backend, limit=2, after=page2.next)
    assert _ids(page3.data) == [runs[0].id]
    assert page3.next is None
    assert page3.prev is not None

    page2_back = await _list(backend, limit=2, before=page3.prev)
    assert _ids(page2_back.data) == [runs[2].id, runs[1].id]
    assert page2_back.next == page2.next
    assert page2_back.prev == page2.prev

    page1_back = await _list(backend, limit=2, before=page2_back.prev)
    assert _ids(page1_back.data) == [runs[4].id, runs[3].id]
    assert page1_back.prev is None  # nothing newer
    assert page1_back.next == page1.next


async def test_empty_run_listing_has_no_cursors(backend) -> None:
    listed = await _list(backend)

    assert listed.data == []
    assert listed.next is None
    assert listed.prev is None


@pytest.mark.usefixtures("frozen_clock")
async def test_runs_with_equal_created_at_are_ordered_by_id_descending(backend) -> None:
    runs = [await create_pending_run(backend) for _ in range(5)]
    expected = sorted(runs, key=lambda run: (run.created_at, run.id), reverse=True)

    page1 = await _list(backend, limit=2)
    assert _ids(page1.data) == _ids(expected[0:2])
    assert page1.next is not None

    page2 = await _list(backend, limit=2, after=page1.next)
    assert _ids(page2.data) == _ids(expected[2:4])
    assert page2.next is not None

    page3 = await _list(backend, limit=2, after=page2.next)
    assert _ids(page3.data) == _ids(expected[4:5])
    assert page3.next is None
    assert page3.prev is not None

    page2_back = await _list(backend, limit=2, before=page3.prev)
    assert _ids(page2_back.data) == _ids(expected[2:4])
    assert page2_back.next == page2.next
    assert page2_back.prev == page2.prev


async def test_status_filter_returns_only_matching_runs(backend) -> None:
    completed_run = await create_claimed_run(backend)
    assert completed_run.worker_id is not None
    await backend.complete_workflow_run(
        CompleteWorkflowRunParams(
            workflow_run_id=completed_run.id, worker_id=completed_run.worker_id, output=None
        )
    )
    await create_pending_run(backend)
    failed_id = await _fail_next_pending(backend)
    pending_run = await create_pending_run(backend)  # created last so nothing claims it

    assert _ids((await _list(backend, status="pending")).data) == [pending_run.id]
    assert _ids((await _list(backend, status="completed")).data) == [completed_run.id]
    assert _ids((await _list(backend, status="failed")).data) == [failed_id]
    canceled = await _list(backend, status="canceled")
    assert canceled.data == []
    assert canceled.next is None
    assert canceled.prev is None


async def test_status_filter_paginates(backend) -> None:
    failed_ids = []
    for _ in range(3):
        await create_pending_run(backend)
        failed_ids.append(await _fail_next_pending(backend))
        await asyncio.sleep(GAP_S)
    await create_pending_run(backend)
    await asyncio.sleep(GAP_S)
    await create_pending_run(backend)

    page1 = await _list(backend, status="failed", limit=2)
    assert _ids(page1.data) == [failed_ids[2], failed_ids[1]]
    assert page1.next is not None

    page2 = await _list(backend, status="failed", limit=2, after=page1.next)
    assert _ids(page2.data) == [failed_ids[0]]
    assert page2.next is None
    assert page2.prev is not None

    page1_back = await _list(backend, status="failed", limit=2, before=page2.prev)
    assert _ids(page1_back.data) == [failed_ids[2], failed_ids[1]]


async def test_workflow_name_filter_matches_exactly(backend) -> None:
    order_processor = await create_pending_run(backend, workflow_name="order-processor")
    await create_pending_run(backend, workflow_name="email-sender")
    await create_pending_run(backend, workflow_name="order-processor-v2")

    filtered = await _list(backend, workflow_name="order-processor")
    assert _ids(filtered.data) == [order_processor.id]

    missing = await _list(backend, workflow_name="no-such-workflow")
    assert missing.data == []
    assert missing.next is None
    assert missing.prev is None


async def test_status_and_workflow_name_filters_combine_with_and(backend) -> None:
    await create_pending_run(backend, workflow_name="email-sender")
    await _fail_next_pending(backend)  # failed, other name
    target = await create_pending_run(backend, workflow_name="order-processor")
    assert await _fail_next_pending(backend) == target.id  # failed, target name
    pending_same_name = await create_pending_run(backend, workflow_name="order-processor")

    filtered = await _list(backend, status="failed", workflow_name="order-processor")
    assert _ids(filtered.data) == [target.id]

    by_name = await _list(backend, workflow_name="order-processor")
    assert set(_ids(by_name.data)) == {target.id, pending_same_name.id}


async def test_runs_default_page_size_is_100(backend) -> None:
    for _ in range(DEFAULT_PAGE_SIZE + 1):
        await create_pending_run(backend)

    page1 = await _list(backend)
    assert len(page1.data) == DEFAULT_PAGE_SIZE
    assert page1.next is not None
    assert page1.prev is None

    page2 = await _list(backend, after=page1.next)
    assert len(page2.data) == 1
    assert page2.next is None
    assert set(_ids(page1.data)).isdisjoint(_ids(page2.data))


async def test_listing_only_sees_its_own_namespace(backend, make_backend) -> None:
    other = make_backend(new_id())
    await create_pending_run(other)
    mine = await create_pending_run(backend)

    assert _ids((await _list(backend)).data) == [mine.id]


async def test_cursor_is_base64_json_of_created_at_and_id(backend) -> None:
    runs = await _create_runs(backend, 3)

    page1 = await _list(backend, limit=1)
    assert page1.next is not None
    assert _decode(page1.next) == {
        "createdAt": clock_module.to_iso(runs[2].created_at),
        "id": runs[2].id,
    }

    page2 = await _list(backend, limit=1, after=page1.next)
    assert page2.prev is not None
    assert _decode(page2.prev) == {
        "createdAt": clock_module.to_iso(runs[1].created_at),
        "id": runs[1].id,
    }


async def test_after_and_before_together_are_rejected(backend) -> None:
    await _create_runs(backend, 3)
    page = await _list(backend, limit=1)
    page2 = await _list(backend, limit=1, after=page.next)
    assert page.next is not None
    assert page2.prev is not None

    with pytest.raises(ValueError, match="Cannot specify both 'after' and 'before' cursors"):
        await _list(backend, after=page.next, before=page2.prev)


# -- listStepAttempts ---------------------------------------------------------


async def test_steps_are_listed_oldest_first(backend) -> None:
    run = await create_claimed_run(backend)
    first = await create_step(backend, run)
    await asyncio.sleep(GAP_S)
    second = await create_step(backend, run)

    listed = await _list_steps(backend, run.id)

    assert [step.step_name for step in listed.data] == [first.step_name, second.step_name]
    assert listed.data == [first, second]
    assert listed.next is None
    assert listed.prev is None


async def test_steps_paginate_forward_and_back(backend) -> None:
    run = await create_claimed_run(backend, lease_ms=60_000)
    for i in range(5):
        await create_step(backend, run, step_name=f"step-{i}")
        await asyncio.sleep(GAP_S)

    def names(page: object) -> list[str]:
        return [step.step_name for step in page.data]

    page1 = await _list_steps(backend, run.id, limit=2)
    assert names(page1) == ["step-0", "step-1"]
    assert page1.next is not None
    assert page1.prev is None

    page2 = await _list_steps(backend, run.id, limit=2, after=page1.next)
    assert names(page2) == ["step-2", "step-3"]
    assert page2.next is not None
    assert page2.prev is not None

    page3 = await _list_steps(backend, run.id, limit=2, after=page2.next)
    assert names(page3) == ["step-4"]
    assert page3.next is None
    assert page3.prev is not None

    page2_back = await _list_steps(backend, run.id, limit=2, before=page3.prev)
    assert names(page2_back) == ["step-2", "step-3"]
    assert page2_back.next == page2.next
    assert page2_back.prev == page2.prev


async def test_empty_step_listing_has_no_cursors(backend) -> None:
    run = await create_claimed_run(backend)

    listed = await _list_steps(backend, run.id)

    assert listed.data == []
    assert listed.next is None
    assert listed.prev is None


async def test_step_listing_with_exact_limit_match_has_no_cursors(backend) -> None:
    run = await create_claimed_run(backend)
    step = await create_step(backend, run, step_name="step-1")

    listed = await _list_steps(backend, run.id, limit=1)

    assert listed.data == [step]
    assert listed.next is None
    assert listed.prev is None


@pytest.mark.usefixtures("frozen_clock")
async def test_steps_with_equal_created_at_are_ordered_by_id_ascending(backend) -> None:
    run = await create_claimed_run(backend, lease_ms=60_000)
    steps = [await create_step(backend, run) for _ in range(5)]
    expected = sorted(steps, key=lambda step: (step.created_at, step.id))

    page1 = await _list_steps(backend, run.id, limit=3)
    assert _ids(page1.data) == _ids(expected[0:3])
    page2 = await _list_steps(backend, run.id, limit=3, after=page1.next)
    assert _ids(page2.data) == _ids(expected[3:5])
    assert page2.next is None
    page1_back = await _list_steps(backend, run.id, limit=3, before=page2.prev)
    assert _ids(page1_back.data) == _ids(expected[0:3])


async def test_step_listing_is_scoped_to_the_run(backend) -> None:
    run_a = await create_claimed_run(backend)
    step_a = await create_step(backend, run_a)
    run_b = await create_claimed_run(backend)
    step_b = await create_step(backend, run_b)

    assert (await _list_steps(backend, run_a.id)).data == [step_a]
    assert (await _list_steps(backend, run_b.id)).data == [step_b]
    assert (await _list_steps(backend, new_id())).data == []
