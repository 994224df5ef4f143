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
from collections.abc import Callable
from typing import Any

import pytest

from openworkflow import OpenWorkflow, Step, Workflow, workflow
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


async def _park_then_replay(
    backend: Any,
    caplog: pytest.LogCaptureFixture,
    parked: Workflow,
    signal: str,
    before_replay: Callable[[], None] = lambda: None,
) -> tuple[Any, list[str]]:
    """Run ``parked`` until it waits on ``signal``, call ``before_replay``, wake it;
    return its output and the replay divergences logged."""
    ow = OpenWorkflow(backend)
    with caplog.at_level(logging.WARNING, logger="openworkflow.replay"):
        async with running_worker(backend, [parked]):
            handle = await ow.run(parked)
            await wait_for_parked(backend, handle.id)
            before_replay()
            await ow.send_signal(signal)
            done = await wait_for_status(backend, handle.id, "completed", "failed")
    assert done.status == "completed", done.error
    return done.output, [r.getMessage() for r in caplog.records if r.name == "openworkflow.replay"]


async def _replay_with(backend: Any, caplog: pytest.LogCaptureFixture, plan: str) -> list[str]:
    code = {"plan": "original"}
    signal = f"go-{uuid.uuid4()}"

    @workflow(name=f"divergence-{plan}")
    async def changing(step: Step) -> list[str]:
        outputs = [await step.run(name, lambda n=name: _slow(n)) for name in PLANS[code["plan"]]]
        await step.wait_for_signal(signal)
        return outputs

    _, messages = await _park_then_replay(
        backend, caplog, changing, signal, lambda: code.update(plan=plan)
    )
    return messages


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

    output, messages = await _park_then_replay(backend, caplog, parallel, signal)
    assert output == ["slow", "fast", "then"]
    assert messages == []


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

    output, messages = await _park_then_replay(backend, caplog, branches, signal)
    assert output == ["a1", "a2", "b1"]
    assert messages == []
