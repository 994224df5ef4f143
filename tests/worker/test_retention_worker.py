"""A worker with a retention policy prunes old finished runs in the background.

It never touches a parked run, a run whose status has no age in the policy,
or a child whose parent still waits for it; a bad policy fails when the
worker is built.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openworkflow import OpenWorkflow, RetryPolicy, Step, workflow
from openworkflow.core.backend import GetWorkflowRunParams
from openworkflow.worker.retention import RetentionPruner
from tests.support.waiting import wait_until
from tests.worker.helpers import make_worker, wait_for_status


@workflow(name="retention-done")
async def done(step: Step) -> int:
    return int(await step.run("one", lambda: 1))


def _fail() -> None:
    raise LookupError("broken on purpose")


@workflow(name="retention-broken", retry_policy=RetryPolicy(maximum_attempts=1))
async def broken(step: Step) -> None:
    await step.run("fail", _fail, retry_policy=RetryPolicy(maximum_attempts=1))


@workflow(name="retention-waiter")
async def waiter(step: Step) -> Any:
    return await step.wait_for_signal("go", timeout="1h")


@workflow(name="retention-parent")
async def parent(step: Step) -> Any:
    await step.run_workflow(done)
    return await step.wait_for_signal("go", timeout="1h")


async def _gone(backend: Any, run_id: str) -> bool:
    found = await backend.get_workflow_run(GetWorkflowRunParams(workflow_run_id=run_id))
    return found is None


async def test_worker_prunes_old_finished_runs_only(backend: Any) -> None:
    client = OpenWorkflow(backend)
    worker = make_worker(
        backend, [done, broken, waiter, parent], retention={"completed": "50ms", "failed": None}
    )
    worker.pruner.interval = 0.05  # passes every 50 ms instead of every minute
    async with worker:
        finished = await client.run(done)
        failed = await client.run(broken)
        parked = await client.run(waiter)
        waiting_parent = await client.run(parent)
        await wait_for_status(backend, finished.id, "completed")
        await wait_for_status(backend, failed.id, "failed")

        async def pruned() -> bool:
            return await _gone(backend, finished.id)

        await wait_until(pruned, message="the completed run to be pruned")

        async def children() -> list[str]:
            return [
                run.id
                for run in (await backend.list_workflow_runs(_list_all())).data
                if run.workflow_name == "retention-done" and run.parent_step_attempt_id is not None
            ]

        async def child_created() -> bool:
            return len(await children()) == 1

        await wait_until(child_created, message="the parent's child run to be created")
        child_ids = await children()
        await wait_for_status(backend, child_ids[0], "completed")
        # Several passes later, what the policy keeps is still there.
        deleted_then = worker.pruner.deleted
        await asyncio.sleep(0.3)
        for kept in (failed.id, parked.id, waiting_parent.id, child_ids[0]):
            assert not await _gone(backend, kept), f"run {kept} was pruned"
        assert worker.pruner.deleted == deleted_then == 1
    counts = await backend.count_workflow_runs()
    assert (counts.completed, counts.failed) == (1, 1)


def test_a_bad_policy_fails_when_the_worker_is_built(backend: Any) -> None:
    with pytest.raises(ValueError, match="running"):
        make_worker(backend, [done], retention={"running": "1d"})
    with pytest.raises(ValueError, match="completed"):
        make_worker(backend, [done], retention={"completed": "soon"})


async def test_no_policy_starts_no_pruner(backend: Any) -> None:
    pruner = RetentionPruner(backend, None)
    pruner.start()
    assert pruner._task is None
    await pruner.stop()


def _list_all() -> Any:
    from openworkflow.core.backend import ListWorkflowRunsParams

    return ListWorkflowRunsParams(limit=100)
