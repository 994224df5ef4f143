"""Changed workflow code on replay: reordered, added, renamed and removed steps are reported.

Steps are matched by name, as in the original, so a changed workflow keeps
running; the engine logs each divergence on the ``openworkflow.replay``
logger. Each test records a first pass (steps, then a signal wait that parks
the run), changes the code, wakes the run and looks at what was reported.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import pytest

from openworkflow import OpenWorkflow, Step, workflow
from tests.worker.helpers import running_worker, wait_for_parked, wait_for_status


def _slow(value: str) -> str:
    time.sleep(0.003)  # steps recorded in distinct milliseconds
    return value


PLANS: dict[str, list[str]] = {
    "original": ["a", "b", "c"],
    "unchanged": ["a", "b", "c"],
    "reordered": ["a", "c", "b"],
    "renamed": ["a", "b2", "c"],
    "removed": ["a", "c"],
    "added": ["a", "x", "b", "c"],
}

EXPECTED = {
    "reordered": "step 'b' was recorded before step 'c' but is now replayed after it",
    "renamed": "step 'b2' has no history but runs before recorded steps 'b', 'c'",
    "removed": "the run completed without reaching recorded steps 'b'",
    "added": "step 'x' has no history but runs before recorded steps 'b', 'c'",
}


async def _replay_with(backend: Any, caplog: pytest.LogCaptureFixture, plan: str) -> list[str]:
    code = {"plan": "original"}
    signal = f"go-{uuid.uuid4()}"

    @workflow(name=f"divergence-{plan}")
    async def changing(step: Step) -> list[str]:
        outputs = [await step.run(name, lambda n=name: _slow(n)) for name in PLANS[code["plan"]]]
        await step.wait_for_signal(signal)
        return outputs

    ow = OpenWorkflow(backend)
    with caplog.at_level(logging.WARNING, logger="openworkflow.replay"):
        async with running_worker(backend, [changing]):
            handle = await ow.run(changing)
            await wait_for_parked(backend, handle.id)
            code["plan"] = plan
            await ow.send_signal(signal)
            done = await wait_for_status(backend, handle.id, "completed", "failed")
    assert done.status == "completed", done.error
    return [r.getMessage() for r in caplog.records if r.name == "openworkflow.replay"]


@pytest.mark.parametrize("plan", ["reordered", "renamed", "removed", "added"])
async def test_a_changed_workflow_is_reported_on_replay(
    backend: Any, caplog: pytest.LogCaptureFixture, plan: str
) -> None:
    messages = await _replay_with(backend, caplog, plan)
    assert any(EXPECTED[plan] in message for message in messages), messages


async def test_an_unchanged_workflow_reports_nothing(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    assert await _replay_with(backend, caplog, "unchanged") == []


async def test_parallel_steps_finishing_out_of_order_are_not_reported(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """``gather`` names steps in call order but records them as they finish."""
    signal = f"go-{uuid.uuid4()}"

    async def after(seconds: float, value: str) -> str:
        await asyncio.sleep(seconds)
        return value

    @workflow(name="divergence-parallel")
    async def parallel(step: Step) -> list[str]:
        outputs = await asyncio.gather(
            step.run("slow", lambda: after(0.03, "slow")),
            step.run("fast", lambda: after(0.0, "fast")),
        )
        then = await step.run("then", lambda: _slow("then"))
        await step.wait_for_signal(signal)
        return [*outputs, then]

    ow = OpenWorkflow(backend)
    with caplog.at_level(logging.WARNING, logger="openworkflow.replay"):
        async with running_worker(backend, [parallel]):
            handle = await ow.run(parallel)
            await wait_for_parked(backend, handle.id)
            await ow.send_signal(signal)
            done = await wait_for_status(backend, handle.id, "completed", "failed")
    assert done.status == "completed" and done.output == ["slow", "fast", "then"]
    assert [r.getMessage() for r in caplog.records if r.name == "openworkflow.replay"] == []


async def test_parallel_branches_of_several_steps_are_not_reported(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Branches replay one after another (cached steps do not suspend); each is its own chain."""
    signal = f"go-{uuid.uuid4()}"

    async def after(seconds: float, value: str) -> str:
        await asyncio.sleep(seconds)
        return value

    @workflow(name="divergence-branches")
    async def branches(step: Step) -> list[str]:
        async def quick_branch() -> list[str]:
            return [
                await step.run("a1", lambda: after(0.0, "a1")),
                await step.run("a2", lambda: after(0.0, "a2")),
            ]

        async def slow_branch() -> list[str]:
            return [await step.run("b1", lambda: after(0.03, "b1"))]

        quick, slow = await asyncio.gather(quick_branch(), slow_branch())
        await step.wait_for_signal(signal)
        return [*quick, *slow]

    ow = OpenWorkflow(backend)
    with caplog.at_level(logging.WARNING, logger="openworkflow.replay"):
        async with running_worker(backend, [branches]):
            handle = await ow.run(branches)
            await wait_for_parked(backend, handle.id)
            await ow.send_signal(signal)
            done = await wait_for_status(backend, handle.id, "completed", "failed")
    assert done.status == "completed" and done.output == ["a1", "a2", "b1"]
    assert [r.getMessage() for r in caplog.records if r.name == "openworkflow.replay"] == []
