"""The database failing under a running pass: nothing is decided, nothing is lost.

A backend wrapper injects ``BackendUnavailableError`` into the engine's own
calls (as a dropped PostgreSQL connection would). The run must not be marked
failed, workflow code must not be able to swallow the fault, and the run
must finish once the database answers again.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from openworkflow import OpenWorkflow, Step, workflow
from openworkflow.errors import BackendUnavailableError
from openworkflow.worker.function_steps import QUICK_STEP_S
from tests.support.proxy import ProxyBackend
from tests.worker.helpers import attempts_named, list_steps, running_worker, wait_for_status


class FlakyBackend(ProxyBackend):
    """Delegates to a real backend; fails the next N calls of chosen methods."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.failures: dict[str, int] = {}
        self.injected = 0

    def fail_next(self, method: str, times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` raise BackendUnavailableError."""
        self.failures[method] = times

    def intercept(self, name: str, target: Any) -> Any:
        if not callable(target) or name.startswith("_") or name == "with_namespace":
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.failures.get(name, 0) > 0:
                self.failures[name] -= 1
                self.injected += 1
                raise BackendUnavailableError(f"injected: connection lost during {name}")
            return await target(*args, **kwargs)

        return call


@pytest.mark.parametrize(
    ("step_seconds", "recording_call"),
    [
        (0.0, "create_completed_step_attempt"),  # a quick step: one write
        (QUICK_STEP_S * 2, "complete_step_attempt"),  # a slow one: insert, then complete
    ],
    ids=["quick-step", "slow-step"],
)
async def test_a_lost_connection_while_recording_a_step_does_not_fail_the_run(
    backend: Any, step_seconds: float, recording_call: str
) -> None:
    flaky = FlakyBackend(backend)
    calls: list[str] = []

    def first_step() -> str:
        time.sleep(step_seconds)
        calls.append("first")
        return "one"

    @workflow(name="fault-record-step")
    async def record(step: Step) -> str:
        first = await step.run("first", first_step)
        try:
            second = await step.run("second", lambda: calls.append("second") or "two")
        except Exception:  # workflow code must not be able to swallow an engine fault
            return "swallowed"
        return f"{first}-{second}"

    ow = OpenWorkflow(backend)
    flaky.fail_next(recording_call, times=1)
    async with running_worker(flaky, [record]):
        handle = await ow.run(record)
        done = await wait_for_status(backend, handle.id, "completed", "failed", timeout=10)
    assert done.status == "completed", done.error
    assert done.output == "one-two"
    assert flaky.injected == 1
    steps = await list_steps(backend, handle.id)
    # The step whose completion was lost ran again (at least once), then completed once.
    assert [a.status for a in attempts_named(steps, "first")][-1] == "completed"
    assert sum(a.status == "completed" for a in steps) == 2


@pytest.mark.parametrize(
    ("step_seconds", "creating_call"),
    [(0.0, "create_completed_step_attempt"), (QUICK_STEP_S * 2, "create_step_attempt")],
    ids=["quick-step", "slow-step"],
)
async def test_a_lost_connection_while_creating_a_step(
    backend: Any, step_seconds: float, creating_call: str
) -> None:
    flaky = FlakyBackend(backend)

    def only_step() -> int:
        time.sleep(step_seconds)
        return 41

    @workflow(name="fault-create-step")
    async def create(step: Step) -> int:
        return await step.run("only", only_step) + 1

    ow = OpenWorkflow(backend)
    flaky.fail_next(creating_call, times=1)
    async with running_worker(flaky, [create]):
        handle = await ow.run(create)
        done = await wait_for_status(backend, handle.id, "completed", "failed", timeout=10)
    assert done.status == "completed", done.error
    assert done.output == 42
    assert flaky.injected == 1


async def test_a_lost_connection_while_loading_history(backend: Any) -> None:
    # A fresh run skips the history read (its claim saw no steps); after a
    # durable sleep the next pass must read it, and that read fails once.
    flaky = FlakyBackend(backend)

    @workflow(name="fault-load-history")
    async def resumed(step: Step) -> int:
        first = await step.run("first", lambda: 20)
        if flaky.injected == 0:
            flaky.fail_next("list_step_attempts", times=1)
        await step.sleep("pause", "100ms")
        return first + await step.run("second", lambda: 22)

    ow = OpenWorkflow(backend)
    async with running_worker(flaky, [resumed]):
        handle = await ow.run(resumed)
        done = await wait_for_status(backend, handle.id, "completed", "failed", timeout=10)
    assert done.status == "completed", done.error
    assert done.output == 42
    assert flaky.injected == 1


async def test_the_worker_loop_survives_failing_claims(backend: Any) -> None:
    flaky = FlakyBackend(backend)

    @workflow(name="fault-claim")
    async def claimed(step: Step) -> str:
        return await step.run("s", lambda: "ok")

    ow = OpenWorkflow(backend)
    flaky.fail_next("claim_workflow_runs", times=3)
    async with running_worker(flaky, [claimed]):
        handle = await ow.run(claimed)
        done = await wait_for_status(backend, handle.id, "completed", "failed", timeout=10)
    assert done.status == "completed"
    assert flaky.injected == 3
