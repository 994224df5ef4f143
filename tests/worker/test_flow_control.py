"""Routing, pause and priority through real workers (SPEC §15), on every backend."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from openworkflow import OpenWorkflow, Step, workflow
from openworkflow.errors import InvalidRunStateError, WorkflowRunNotFoundError
from tests.worker.helpers import get_run, idle_worker, running_worker, tick_and_settle

executed_by: dict[str, str] = {}


@workflow(name="resize-image")
async def resize_image(step: Step, run: Any, input: int) -> int:
    executed_by[run.id] = "images"
    return int(await step.run("resize", lambda: input * 2))


@workflow(name="send-invoice")
async def send_invoice(step: Step, run: Any, input: int) -> int:
    executed_by[run.id] = "invoices"
    return int(await step.run("send", lambda: input + 1))


async def test_workers_with_disjoint_workflows_take_only_their_own_runs(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    images = [await ow.run(resize_image, index) for index in range(10)]
    invoices = [await ow.run(send_invoice, index) for index in range(10)]
    started = time.monotonic()
    async with (
        running_worker(backend, [resize_image], concurrency=2),
        running_worker(backend, [send_invoice], concurrency=2),
    ):
        for index, handle in enumerate(images):
            assert await handle.result(timeout="10s") == index * 2
        for index, handle in enumerate(invoices):
            assert await handle.result(timeout="10s") == index + 1
    # Before routing, the other worker claimed these, did not know them and
    # rescheduled them 5 s later (and longer each time).
    assert time.monotonic() - started < 5
    for handle in images:
        run = await get_run(backend, handle.id)
        assert (executed_by[handle.id], run.attempts) == ("images", 1)
    for handle in invoices:
        run = await get_run(backend, handle.id)
        assert (executed_by[handle.id], run.attempts) == ("invoices", 1)


async def test_a_worker_claims_only_the_versions_it_has(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    other_version = await ow.run(resize_image, 1, version="v2")
    mine = await ow.run(resize_image, 2)
    async with idle_worker(backend, [resize_image]) as worker:
        assert await tick_and_settle(worker) == 1
        assert await tick_and_settle(worker) == 0
    assert (await get_run(backend, mine.id)).status == "completed"
    untouched = await get_run(backend, other_version.id)
    assert (untouched.status, untouched.attempts) == ("pending", 0)


async def test_runs_nobody_knows_are_still_warned_about_and_rescheduled(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="openworkflow")
    ow = OpenWorkflow(backend)
    ghost = await ow.run("ghost-workflow", None)
    known = await ow.run(resize_image, 3)
    async with idle_worker(backend, [resize_image], concurrency=2) as worker:
        assert await worker.sweep_unrouted() == 1
        await tick_and_settle(worker)
    run = await get_run(backend, ghost.id)
    assert (run.status, run.attempts) == ("pending", 1)
    assert run.available_at is not None and run.worker_id is None
    assert any('"ghost-workflow" is not registered' in r.getMessage() for r in caplog.records)
    assert (await get_run(backend, known.id)).status == "completed"


async def test_the_sweep_leaves_runs_another_live_worker_knows(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    invoice = await ow.run(send_invoice, 1)
    async with idle_worker(backend, [send_invoice]) as invoices_worker:
        # Registered (its sweep finds nothing unknown), but it claims nothing yet.
        assert await invoices_worker.sweep_unrouted() == 0
        async with idle_worker(backend, [resize_image]) as images_worker:
            assert await images_worker.sweep_unrouted() == 0
        run = await get_run(backend, invoice.id)
        assert (run.status, run.attempts) == ("pending", 0)
        assert await tick_and_settle(invoices_worker) == 1
    assert (await get_run(backend, invoice.id)).status == "completed"


async def test_a_paused_workflow_is_not_claimed_until_resumed(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    paused = await ow.pause_workflow("resize-image")
    assert paused.workflow_name == "resize-image"
    assert [item.workflow_name for item in await ow.paused_workflows()] == ["resize-image"]
    held = await ow.run(resize_image, 5)
    other = await ow.run(send_invoice, 5)
    async with idle_worker(backend, [resize_image, send_invoice]) as worker:
        assert await tick_and_settle(worker) == 1
        assert await worker.sweep_unrouted() == 0  # paused is not unknown
        assert (await get_run(backend, held.id)).status == "pending"
        assert await ow.resume_workflow("resize-image") is True
        assert await ow.resume_workflow("resize-image") is False
        assert await tick_and_settle(worker) == 1
    assert (await get_run(backend, held.id)).status == "completed"
    assert (await get_run(backend, other.id)).status == "completed"
    assert await ow.paused_workflows() == []


async def test_a_pass_under_way_finishes_when_its_workflow_is_paused(backend: Any) -> None:
    release = asyncio.Event()
    reached = asyncio.Event()

    @workflow(name="long-report")
    async def long_report(step: Step) -> str:
        async def wait() -> str:
            reached.set()
            await release.wait()
            return "done"

        return str(await step.run("build", wait))

    ow = OpenWorkflow(backend)
    handle = await ow.run(long_report)
    async with running_worker(backend, [long_report]):
        await asyncio.wait_for(reached.wait(), 10)
        await ow.pause_workflow("long-report")
        release.set()
        assert await handle.result(timeout="10s") == "done"


async def test_higher_priority_runs_are_claimed_first(backend: Any) -> None:
    order: list[str] = []

    @workflow(name="ranked", priority=1)
    async def ranked(input: str) -> str:
        order.append(input)
        return input

    ow = OpenWorkflow(backend)
    await ow.run(ranked, "default-1")
    low = await ow.run(ranked, "low", priority=-5)
    await ow.run(ranked, "urgent", priority=10)
    await ow.run(ranked, "default-2")
    assert low.workflow_run is not None and low.workflow_run.priority == -5
    async with idle_worker(backend, [ranked], concurrency=1) as worker:
        for _ in range(4):
            assert await tick_and_settle(worker) == 1
    assert order == ["urgent", "default-1", "default-2", "low"]


async def test_set_priority_reorders_a_queued_run(backend: Any) -> None:
    order: list[str] = []

    @workflow(name="queued")
    async def queued(input: str) -> str:
        order.append(input)
        return input

    ow = OpenWorkflow(backend)
    await ow.run(queued, "first")
    late = await ow.run(queued, "late")
    changed = await ow.set_priority(late.id, 3)
    assert changed.priority == 3 and (await get_run(backend, late.id)).priority == 3
    async with idle_worker(backend, [queued]) as worker:
        await tick_and_settle(worker)
        await tick_and_settle(worker)
    assert order == ["late", "first"]
    with pytest.raises(InvalidRunStateError):
        await ow.set_priority(late.id, 1)
    with pytest.raises(WorkflowRunNotFoundError):
        await ow.set_priority("00000000-0000-0000-0000-000000000000", 1)


@pytest.mark.parametrize("bad", [True, 1.5, "3", 2**31, -(2**31) - 1])
async def test_a_bad_priority_is_refused_before_anything_is_written(backend: Any, bad: Any) -> None:
    ow = OpenWorkflow(backend)
    with pytest.raises((TypeError, ValueError), match="priority must be"):
        await ow.run(resize_image, 1, priority=bad)
    assert (await ow.list_runs()).data == []
