"""Big fan-outs: one parent waiting on thousands of children, past the default step limit.

Each ``step.run_workflow`` records one step attempt, so a parent with N
children needs ``@workflow(max_step_attempts=...)`` above N (the default stays
1000, the original's limit). The 10,000-children run is on the SQLite file
backend (about 20 s); the in-memory SQLite and PostgreSQL backends run 1,100
children (past the default limit, a few seconds): PostgreSQL creates each
child with its own transaction, about 7 ms a child on the CI machine, so
10,000 there is the benchmark's job (``python -m benchmarks.fan_out``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openworkflow import OpenWorkflow, Step, workflow
from openworkflow.core.step_attempt import StepKind
from openworkflow.errors import BackendUnavailableError, WorkflowDefinitionError
from openworkflow.worker.step_history import WORKFLOW_STEP_LIMIT
from tests.support.proxy import ProxyBackend
from tests.worker.helpers import list_steps, running_worker, wait_for_status

CHILD = "fan-out-child"
BIG = 10_000
SMALL = 1_100  # past the default limit of 1000


@workflow(name=CHILD)
async def child(input: int) -> int:
    return input * 2


def fan_out_parent(children: int, *, name: str = "fan-out-parent") -> Any:
    @workflow(name=name, max_step_attempts=children + 1)
    async def parent(input: int, step: Step) -> int:
        outputs = await asyncio.gather(*(step.run_workflow(child, index) for index in range(input)))
        assert outputs == [2 * index for index in range(input)]  # in call order
        return sum(outputs)

    return parent


async def _child_inputs(ow: OpenWorkflow) -> list[int]:
    inputs: list[int] = []
    cursor: str | None = None
    while True:
        page = await ow.list_runs(workflow_name=CHILD, limit=1000, after=cursor)
        inputs.extend(run.input for run in page.data)
        if page.next is None:
            return sorted(inputs)
        cursor = page.next


# -- the option --------------------------------------------------------------------------


def test_max_step_attempts_defaults_to_the_original_limit() -> None:
    assert child.spec.max_step_attempts == WORKFLOW_STEP_LIMIT == 1000
    assert fan_out_parent(BIG).spec.max_step_attempts == BIG + 1


@pytest.mark.parametrize("value", [0, -1, 1_000_001, True, 10.0, "5000", None])
def test_max_step_attempts_is_validated(value: Any) -> None:
    with pytest.raises(WorkflowDefinitionError, match="max_step_attempts"):

        @workflow(name="bad-limit", max_step_attempts=value)
        async def bad() -> None: ...


async def test_a_run_past_its_own_limit_fails(backend: Any) -> None:
    @workflow(name="three-steps-allowed", max_step_attempts=3)
    async def limited(step: Step) -> int:
        for index in range(4):
            await step.run(f"s{index}", lambda: None)
        return 4

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [limited]):
        handle = await ow.run(limited)
        done = await wait_for_status(backend, handle.id, "completed", "failed", timeout=10)
    assert done.status == "failed"
    assert "3" in str(done.error) and "limit" in str(done.error).lower()
    assert len(await list_steps(backend, handle.id)) == 3


async def test_a_raised_limit_reads_a_history_longer_than_the_default(backend: Any) -> None:
    # Parks between the steps, so a later pass loads more than 1000 attempts.
    @workflow(name="long-history", max_step_attempts=1100)
    async def long_history(step: Step) -> int:
        for index in range(1050):
            await step.run(f"s{index}", lambda: None)
        await step.sleep("nap", "1ms")
        return 1050

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [long_history]):
        handle = await ow.run(long_history)
        done = await wait_for_status(backend, handle.id, "completed", "failed", timeout=60)
    assert done.status == "completed", done.error
    assert len(await list_steps(backend, handle.id)) == 1051


# -- the fan-out ------------------------------------------------------------------------


async def _fan_out(backend: Any, children: int, timeout: float) -> None:
    parent = fan_out_parent(children)
    ow = OpenWorkflow(backend)
    # The default lease, not the tests' 500 ms: a pass replaying thousands of
    # child steps keeps the event loop busy for longer than that between heartbeats.
    async with running_worker(backend, [parent, child], concurrency=50, lease_duration="30s"):
        handle = await ow.run(parent, children)
        done = await wait_for_status(backend, handle.id, "completed", "failed", timeout=timeout)
    assert done.status == "completed", done.error
    assert done.output == children * (children - 1)
    steps = await list_steps(backend, handle.id)
    assert len(steps) == children
    assert {a.kind for a in steps} == {StepKind.WORKFLOW}
    assert len({a.child_workflow_run_id for a in steps}) == children
    assert await _child_inputs(ow) == list(range(children))  # each child once


@pytest.mark.slow
async def test_a_parent_with_ten_thousand_children_completes(
    backend: Any, backend_kind: str
) -> None:
    if backend_kind != "sqlite_file":
        pytest.skip("10,000 children on the SQLite file backend; the others run 1,100")
    await _fan_out(backend, BIG, timeout=110)


async def test_a_parent_past_the_default_limit_completes(backend: Any, backend_kind: str) -> None:
    if backend_kind == "sqlite_file":
        pytest.skip("the SQLite file backend runs 10,000 children")
    await _fan_out(backend, SMALL, timeout=60)


# -- a pass interrupted mid-creation -----------------------------------------------------


class CrashAfterCreating(ProxyBackend):
    """Lets ``after`` children be created, then creates one more and loses the answer."""

    def __init__(self, inner: Any, after: int) -> None:
        super().__init__(inner)
        self.after = after
        self.created = 0
        self.crashed = False

    async def create_workflow_run(self, params: Any) -> Any:
        run = await self.inner.create_workflow_run(params)
        self.created += 1
        if not self.crashed and self.created > self.after:
            # The child exists but its step is not linked: the pass ends here,
            # as a dropped connection would end it, with creations still in flight.
            self.crashed = True
            raise BackendUnavailableError("injected: connection lost after creating a child")
        return run


async def test_a_pass_interrupted_mid_creation_creates_each_child_once(backend: Any) -> None:
    children = 300
    parent = fan_out_parent(children, name="fan-out-interrupted")
    crashing = CrashAfterCreating(backend, after=children // 2)
    ow = OpenWorkflow(backend)
    async with running_worker(crashing, [parent, child], concurrency=20):
        handle = await ow.run(parent, children)
        done = await wait_for_status(backend, handle.id, "completed", "failed", timeout=60)
    assert crashing.crashed
    assert done.status == "completed", done.error
    assert done.output == children * (children - 1)
    assert await _child_inputs(ow) == list(range(children))  # none twice, none missing
    steps = await list_steps(backend, handle.id)
    assert len(steps) == children
    assert all(a.status == "completed" and a.child_workflow_run_id for a in steps)
