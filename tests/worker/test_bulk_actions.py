"""Bulk cancel and retry (:mod:`openworkflow.bulk`): filters, batches, counts, skipped runs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from openworkflow import OpenWorkflow, WorkflowRun
from openworkflow.bulk import (
    BulkResult,
    RunFilter,
    act_on_runs,
    bulk_cancel,
    bulk_retry,
    count_runs,
    parse_moment,
    plan_bulk,
    select_runs,
)
from openworkflow.core import clock as app_clock
from openworkflow.core.backend import CompleteWorkflowRunParams, FailWorkflowRunParams
from openworkflow.errors import InvalidDurationError
from tests.backend.helpers import TERMINAL_RETRY_POLICY, claim, create_claimed_run
from tests.fixtures.clock import Clock
from tests.worker.helpers import get_run


async def _completed(backend: Any, name: str = "done") -> WorkflowRun:
    run = await create_claimed_run(backend, workflow_name=name)
    assert run.worker_id is not None
    completed: WorkflowRun = await backend.complete_workflow_run(
        CompleteWorkflowRunParams(workflow_run_id=run.id, worker_id=run.worker_id, output=1)
    )
    return completed


async def _failed(backend: Any, name: str = "broken") -> WorkflowRun:
    run = await create_claimed_run(backend, workflow_name=name)
    assert run.worker_id is not None
    failed: WorkflowRun = await backend.fail_workflow_run(
        FailWorkflowRunParams(
            workflow_run_id=run.id,
            worker_id=run.worker_id,
            error={"message": "boom"},
            retry_policy=TERMINAL_RETRY_POLICY,
        )
    )
    assert failed.status == "failed"
    return failed


async def _statuses(backend: Any, runs: list[str]) -> list[str]:
    return [(await get_run(backend, run_id)).status for run_id in runs]


async def _ids(ow: OpenWorkflow, run_filter: RunFilter) -> set[str]:
    return {run.id async for batch in select_runs(ow, run_filter) for run in batch}


async def test_filters_by_status_workflow_and_tags(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    done = await _completed(backend, "orders")
    a1 = (await ow.run("orders", 1, tags={"customer": "c-1", "tier": "gold"})).id
    a2 = (await ow.run("orders", 2, tags={"customer": "c-2"})).id
    b1 = (await ow.run("emails", 3, tags={"customer": "c-1"})).id
    assert await _ids(ow, RunFilter(workflow_name="orders")) == {done.id, a1, a2}
    assert await _ids(ow, RunFilter(status="pending", workflow_name="orders")) == {a1, a2}
    assert await _ids(ow, RunFilter(tags={"customer": "c-1"})) == {a1, b1}
    assert await _ids(ow, RunFilter(tags={"customer": "c-1", "tier": "gold"})) == {a1}
    assert await _ids(ow, RunFilter(status=("pending", "completed"))) == {done.id, a1, a2, b1}
    assert await count_runs(ow, RunFilter(workflow_name="nothing-here")) == 0

    result = await bulk_cancel(backend, RunFilter(tags={"customer": "c-1"}))
    assert result == BulkResult(matched=2, done=2, skipped=0)
    assert await _statuses(backend, [a1, a2, b1, done.id]) == [
        "canceled",
        "pending",
        "canceled",
        "completed",
    ]
    with pytest.raises(ValueError, match="unknown status"):
        await count_runs(ow, RunFilter(status="finished"))


async def test_created_range_before_exclusive_after_inclusive(backend: Any, clock: Clock) -> None:
    ow = OpenWorkflow(backend)
    old = await ow.run("aged", 1)
    clock.advance(timedelta(hours=1))
    middle = await ow.run("aged", 2)
    clock.advance(timedelta(hours=1))
    new = await ow.run("aged", 3)
    created = {h.id: (await get_run(backend, h.id)).created_at for h in (old, middle, new)}
    mid_at = created[middle.id]

    assert await _ids(ow, RunFilter(created_before=mid_at)) == {old.id}
    assert await _ids(ow, RunFilter(created_after=mid_at)) == {middle.id, new.id}
    half_hour = timedelta(minutes=30)
    window = RunFilter(created_after=mid_at - half_hour, created_before=mid_at + half_hour)
    assert await _ids(ow, window) == {middle.id}
    # a sub-millisecond bound still keeps the run created just before it
    assert await _ids(ow, RunFilter(created_before=mid_at + timedelta(microseconds=1))) == {
        old.id,
        middle.id,
    }
    # "more than 30 minutes ago": the two older runs, with the clock moved along
    result = await bulk_cancel(ow, RunFilter(created_before=parse_moment("30m")))
    assert result == BulkResult(matched=2, done=2, skipped=0)
    assert await _statuses(backend, [old.id, middle.id, new.id]) == [
        "canceled",
        "canceled",
        "pending",
    ]


async def test_batches_are_pages_of_batch_size_newest_first(backend: Any, clock: Clock) -> None:
    ow = OpenWorkflow(backend)
    ids = []
    for number in range(7):
        ids.append((await ow.run("many", number)).id)
        clock.advance(timedelta(seconds=1))
    limits: list[int | None] = []

    class Recording(OpenWorkflow):
        async def list_runs(self, **options: Any) -> Any:
            limits.append(options.get("limit"))
            return await super().list_runs(**options)

    batches = [
        [run.id for run in batch]
        async for batch in select_runs(
            Recording(backend), RunFilter(workflow_name="many"), batch_size=2
        )
    ]
    assert [len(batch) for batch in batches] == [2, 2, 2, 1]
    assert [run_id for batch in batches for run_id in batch] == list(reversed(ids))
    assert limits == [2, 2, 2, 2]  # one page of batch_size per batch, never the whole table
    # created_after stops the paging: the oldest page is never read
    recent = RunFilter(
        workflow_name="many", created_after=(await get_run(backend, ids[3])).created_at
    )
    sizes = [len(batch) async for batch in select_runs(ow, recent, batch_size=2)]
    assert sizes == [2, 2]

    result = await bulk_cancel(ow, RunFilter(workflow_name="many"), batch_size=2)
    assert result == BulkResult(matched=7, done=7, skipped=0)
    assert set(await _statuses(backend, ids)) == {"canceled"}
    with pytest.raises(ValueError, match="batch_size"):
        await count_runs(ow, RunFilter(), batch_size=0)


async def test_runs_that_no_longer_allow_it_are_skipped(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    done = await _completed(backend, "mixed")
    pending = [(await ow.run("mixed", n)).id for n in range(3)]
    raced = pending[0]

    class CompletesOneFirst(OpenWorkflow):
        """A client whose first cancel finds the run completed meanwhile (a worker won)."""

        async def cancel(self, run_id: str) -> WorkflowRun:
            if run_id == raced:
                claimed = await create_claimed_run_for(backend, raced)
                await backend.complete_workflow_run(
                    CompleteWorkflowRunParams(
                        workflow_run_id=raced, worker_id=claimed.worker_id or "", output=None
                    )
                )
            return await super().cancel(run_id)

    result = await bulk_cancel(
        CompletesOneFirst(backend), RunFilter(status=("pending", "completed"))
    )
    assert result == BulkResult(matched=4, done=2, skipped=2)  # the completed and the raced
    assert await _statuses(backend, [done.id, *pending]) == [
        "completed",
        "completed",
        "canceled",
        "canceled",
    ]
    again = await bulk_cancel(backend, RunFilter(workflow_name="mixed", status="canceled"))
    assert again == BulkResult(matched=2, done=0, skipped=2)  # canceled already: nothing done
    by_id = await act_on_runs(ow, "cancel", [done.id, "no-such-run", pending[1], done.id])
    assert by_id == BulkResult(matched=3, done=0, skipped=3)


async def create_claimed_run_for(backend: Any, run_id: str) -> WorkflowRun:
    """Claim ``run_id`` (the only pending run of its workflow due first)."""
    claimed = await claim(backend)
    assert claimed is not None and claimed.id == run_id, "expected the raced run to be claimed"
    return claimed


async def test_retry_takes_failed_and_canceled_runs_only(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    failed = await _failed(backend, "flaky")
    completed = await _completed(backend, "flaky")
    canceled = (await ow.run("flaky", 1)).id
    await ow.cancel(canceled)
    pending = (await ow.run("flaky", 2)).id

    plan = await plan_bulk(ow, "retry", RunFilter(workflow_name="flaky"))
    assert plan.matched == 2
    assert set(plan.run_filter.statuses()) == {"failed", "canceled"}
    result = await bulk_retry(ow, plan.run_filter, batch_size=1)
    assert result == BulkResult(matched=2, done=2, skipped=0)
    assert await _statuses(backend, [failed.id, completed.id, canceled, pending]) == [
        "pending",
        "completed",
        "pending",
        "pending",
    ]
    # statuses named explicitly: those that do not allow a retry are skipped
    explicit = await bulk_retry(ow, RunFilter(workflow_name="flaky", status=("completed",)))
    assert explicit == BulkResult(matched=1, done=0, skipped=1)
    by_id = await act_on_runs(backend, "retry", [pending, completed.id])
    assert by_id == BulkResult(matched=2, done=0, skipped=2)


async def test_a_plan_leaves_runs_started_after_the_count_alone(backend: Any, clock: Clock) -> None:
    ow = OpenWorkflow(backend)
    counted = [(await ow.run("planned", n)).id for n in range(3)]
    plan = await plan_bulk(ow, "cancel", RunFilter(workflow_name="planned"))
    assert plan.matched == 3
    clock.advance(timedelta(seconds=1))
    late = (await ow.run("planned", 9)).id
    result = await bulk_cancel(ow, plan.run_filter)
    assert result == BulkResult(matched=3, done=3, skipped=0)
    assert await _statuses(backend, [*counted, late]) == ["canceled"] * 3 + ["pending"]
    nothing = await plan_bulk(ow, "retry", RunFilter(workflow_name="nobody"))
    assert nothing.matched == 0


def test_parse_moment_reads_times_and_ages() -> None:
    now = app_clock.now()
    assert parse_moment("2h", now=now) == now - timedelta(hours=2)
    assert parse_moment("90", now=now) == now - timedelta(seconds=90)  # bare: seconds
    utc = parse_moment("2026-01-31T09:00:00Z")
    assert utc.isoformat() == "2026-01-31T09:00:00+00:00"
    assert parse_moment("2026-01-31T09:00") == utc  # no offset: UTC
    assert parse_moment("2026-01-31T11:00:00+02:00") == utc
    for bad in ("soon", "2026-13-45", "-2h"):
        with pytest.raises(InvalidDurationError):
            parse_moment(bad)
