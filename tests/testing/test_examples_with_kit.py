"""The example workflows (``workflows/``), tested as a user would: with ``ow_env``.

The examples sleep, retry with backoffs and wait days for a signal; with
time skipping none of that takes real time. Each test checks the example's
real output and the behaviour it shows (a retry, a signal, a timeout, the
compensations, the progress stream), and that the engine's clock moved past
the waits (a wait that did not skip would run into the environment's
real-time guard instead).
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

import pytest

import workflows.process_order as process_order_module
from openworkflow import RunHandle
from openworkflow.testing.environment import WorkflowEnvironment
from openworkflow.testing.pytest_plugin import WorkflowEnvironmentFactory
from workflows.approval import approval_signal, approve_expense
from workflows.fan_out import resize_album, resize_image
from workflows.hello_world import hello_world
from workflows.process_order import process_order
from workflows.summarize_report import summarize_report
from workflows.trip_booking import trip_booking

ORDER = {
    "order_id": "A-1001",
    "items": [
        {"sku": "book", "quantity": 2, "unit_price": 12.5},
        {"sku": "pen", "quantity": 3, "unit_price": 1.2},
    ],
}
REPORT = {
    "title": "Quarterly report",
    "pages": [
        "Revenue grew in every region this quarter, led by Europe.",
        "Costs stayed flat while headcount grew by four people.",
        "Next quarter we open the Lisbon office and hire two engineers.",
    ],
}
EXPENSE = {"expense_id": "E-7", "amount_cents": 4200}


async def _steps(env: WorkflowEnvironment, run_id: str) -> list[tuple[str, str, str]]:
    """A run's step attempts, oldest first, as (name, kind, status)."""
    page = await env.client.list_steps(run_id)
    return [(attempt.step_name, attempt.kind, attempt.status) for attempt in page.data]


async def _until_waiting_for_signal(env: WorkflowEnvironment, handle: RunHandle) -> None:
    """Wait (not through ``env``, so time does not skip) until the run parks on its signal."""
    for _ in range(2000):
        run = await env.client.get_run(handle.id)
        steps = await _steps(env, handle.id)
        waiting = any(name == "decision" and status == "running" for name, _, status in steps)
        if run is not None and run.worker_id is None and waiting:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"run {handle.id} never waited for its signal")


async def test_hello_world_greets_after_its_sleep(ow_env: WorkflowEnvironmentFactory) -> None:
    async with ow_env(workflows=[hello_world]) as env:
        started = env.now()
        handle = await env.start(hello_world, {"name": "OpenWorkflow"})
        assert await env.result(handle) == {"greeting": "Hello, OpenWorkflow!"}
        assert env.now() - started >= timedelta(seconds=1)
        assert await _steps(env, handle.id) == [
            ("greet", "function", "completed"),
            ("pause", "sleep", "completed"),
        ]
        assert await env.run(hello_world, {}) == {"greeting": "Hello, world!"}


async def test_process_order_charges_on_the_retry(
    ow_env: WorkflowEnvironmentFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pretend gateway counts attempts per order id in a module dict: a fresh one per test.
    monkeypatch.setattr(process_order_module, "_charge_attempts", {})
    async with ow_env(workflows=[process_order]) as env:
        started = env.now()
        handle = await env.start(process_order, ORDER)
        output = await env.result(handle)
        assert output["run_id"] == handle.id
        assert output["reserved"] == 2
        assert output["total"] == 28.6
        assert output["charge"]["amount"] == 28.6
        assert re.fullmatch(r"ch_A-1001_\d{4}", output["charge"]["charge_id"])
        assert process_order_module._charge_attempts == {"A-1001": 2}
        steps = await _steps(env, handle.id)
        charges = [status for name, _, status in steps if name == "charge-card"]
        assert charges == ["failed", "completed"]  # timed out once, then charged
        assert {name for name, _, _ in steps} == {
            "reserve-book",
            "reserve-pen",
            "charge-card",
            "send-receipt",
        }
        assert env.now() - started >= timedelta(milliseconds=200)  # the backoff passed


async def test_approval_is_booked_when_approved_by_send_signal(
    ow_env: WorkflowEnvironmentFactory,
) -> None:
    async with ow_env(workflows=[approve_expense]) as env:
        handle = await env.start(approve_expense, EXPENSE)
        await _until_waiting_for_signal(env, handle)
        delivered = await env.client.send_signal(
            approval_signal("E-7"), {"approved": True, "by": "ana"}
        )
        assert delivered == [handle.id]
        assert await env.result(handle) == {"expense_id": "E-7", "status": "booked", "by": "ana"}
        created = handle.workflow_run.created_at  # type: ignore[union-attr]
        assert env.now() - created < timedelta(days=3)  # answered before the timeout
        assert ("record-decision", "function", "completed") in await _steps(env, handle.id)


async def test_approval_is_rejected_by_a_signal_to_the_run(
    ow_env: WorkflowEnvironmentFactory,
) -> None:
    async with ow_env(workflows=[approve_expense]) as env:
        handle = await env.start(approve_expense, EXPENSE)
        await _until_waiting_for_signal(env, handle)
        await handle.signal(approval_signal("E-7"), {"approved": False, "by": "bo"})
        assert await env.result(handle) == {"expense_id": "E-7", "status": "rejected", "by": "bo"}
        created = handle.workflow_run.created_at  # type: ignore[union-attr]
        assert env.now() - created < timedelta(days=3)


async def test_approval_escalates_when_nobody_answers_in_three_days(
    ow_env: WorkflowEnvironmentFactory,
) -> None:
    async with ow_env(workflows=[approve_expense]) as env:
        started = env.now()
        handle = await env.start(approve_expense, EXPENSE)
        assert await env.result(handle) == {"expense_id": "E-7", "status": "escalated"}
        assert timedelta(days=3) <= env.now() - started < timedelta(days=4)
        names = [name for name, _, _ in await _steps(env, handle.id)]
        assert "record-decision" not in names


async def test_fan_out_gathers_one_child_per_image_in_order(
    ow_env: WorkflowEnvironmentFactory,
) -> None:
    images = ["cat.png", "dog.png", "owl.png"]
    async with ow_env(workflows=[resize_album, resize_image]) as env:
        handle = await env.start(resize_album, images)
        assert await env.result(handle) == [
            {"image": image, "thumbnail": f"thumb-{image}"} for image in images
        ]
        children = (await env.client.list_runs(workflow_name="resize-image")).data
        assert sorted(str(child.input) for child in children) == images
        assert {child.status for child in children} == {"completed"}
        steps = await _steps(env, handle.id)
        assert sorted(name for name, _, _ in steps) == [f"resize:{image}" for image in images]


async def test_trip_to_lisbon_is_compensated_newest_first(
    ow_env: WorkflowEnvironmentFactory,
) -> None:
    async with ow_env(workflows=[trip_booking]) as env:
        handle = await env.start(trip_booking, {"trip_id": "T-42", "destination": "Lisbon"})
        assert await env.result(handle) == {
            "status": "compensated",
            "reason": "no cars available in Lisbon",
            "compensated": ["hotel", "flight"],
        }
        steps = await env.client.list_steps(handle.id)
        by_name: dict[str, Any] = {attempt.step_name: attempt for attempt in steps.data}
        assert [attempt.step_name for attempt in steps.data] == [
            "flight",
            "hotel",
            "car",
            "compensate-hotel",
            "compensate-flight",
        ]
        assert by_name["car"].status == "failed"  # not retried: no cars is final
        assert by_name["compensate-hotel"].output == "canceled HT-T-42"
        assert by_name["compensate-flight"].output == "canceled FL-T-42"


async def test_trip_to_porto_is_booked(ow_env: WorkflowEnvironmentFactory) -> None:
    async with ow_env(workflows=[trip_booking]) as env:
        output = await env.run(trip_booking, {"trip_id": "T-7", "destination": "Porto"})
        assert output == {
            "status": "booked",
            "flight": {"booking_id": "FL-T-7", "to": "Porto"},
            "hotel": {"booking_id": "HT-T-7", "nights": 3},
            "car": {"booking_id": "CR-T-7"},
        }


async def _read_all(handle: RunHandle, key: str) -> list[Any]:
    return [item async for item in handle.stream(key)]


async def test_summarize_report_streams_one_progress_item_per_page(
    ow_env: WorkflowEnvironmentFactory,
) -> None:
    expected: list[dict[str, Any]] = [
        {"page": 1, "of": 3, "summary": "Revenue grew in every region ..."},
        {"page": 2, "of": 3, "summary": "Costs stayed flat while headcount ..."},
        {"page": 3, "of": 3, "summary": "Next quarter we open the ..."},
    ]
    async with ow_env(workflows=[summarize_report]) as env:
        handle = await env.start(summarize_report, REPORT)
        # A reader that joins before the run ends, and one that joins after it.
        early_reader = asyncio.create_task(_read_all(handle, "progress"))
        assert await env.result(handle) == {
            "title": "Quarterly report",
            "pages": 3,
            "summary": " / ".join(item["summary"] for item in expected),
        }
        assert await asyncio.wait_for(early_reader, timeout=30) == expected
        assert await _read_all(handle, "progress") == expected
        assert await handle.get_event("status") == "3/3 pages"
