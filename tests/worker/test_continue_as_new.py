"""``step.continue_as_new``: a run completes by starting a fresh run of itself, linked to it."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from openworkflow import OpenWorkflow, Step, workflow
from openworkflow.core.backend import ListWorkflowRunsParams
from openworkflow.errors import BackendError, InputValidationError
from tests.worker.helpers import get_run, running_worker


@workflow(name="countdown", version="v1")
async def countdown(step: Step, input: int) -> int:
    seen = await step.run("look", lambda: input)
    if seen < 3:
        # Two passes before continuing: the replay must not start a second successor.
        await step.sleep("pause", "10ms")
        await step.continue_as_new(seen + 1)
        raise AssertionError("continue_as_new returned")  # pragma: no cover
    return seen


@workflow(name="bad-continue")
async def bad_continue(step: Step, input: int) -> str:
    try:
        await step.continue_as_new("not a number")
    except InputValidationError:
        return "refused"
    return "continued"  # pragma: no cover


async def chain_of(backend: Any, name: str) -> list[Any]:
    page = await backend.list_workflow_runs(ListWorkflowRunsParams(workflow_name=name, limit=100))
    return sorted(page.data, key=lambda run: run.created_at)


async def test_continue_as_new_three_times_then_result_follows_the_chain(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    first = await ow.run(countdown, 0)
    async with running_worker(backend, [countdown], concurrency=2):
        assert await first.result(timeout=30) == 3
    runs = await chain_of(backend, "countdown")
    assert [run.input for run in runs] == [0, 1, 2, 3]  # one successor per link, no more
    for run, successor in itertools.pairwise(runs):
        assert (run.status, run.continued_as_id, run.output) == ("completed", successor.id, None)
        assert successor.version == "v1" and successor.attempts >= 1
    assert runs[-1].continued_as_id is None and runs[-1].output == 3
    # Any handle of the chain ends at the same result; the sync handle too.
    assert await ow.handle(runs[2].id).result(timeout=5) == 3


async def test_a_bad_successor_input_raises_in_the_workflow(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    run = await ow.run(bad_continue, 1)
    async with running_worker(backend, [bad_continue]):
        assert await run.result(timeout=30) == "refused"
    assert len(await chain_of(backend, "bad-continue")) == 1


async def test_a_fault_between_starting_and_linking_the_successor_starts_it_once(
    backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = backend.set_workflow_run_successor
    faults = []

    async def flaky(params: Any) -> Any:
        if not faults:
            faults.append(params.successor_id)
            raise BackendError("connection lost while linking the successor")
        return await link(params)

    monkeypatch.setattr(backend, "set_workflow_run_successor", flaky)
    ow = OpenWorkflow(backend)
    first = await ow.run(countdown, 2)
    async with running_worker(backend, [countdown]):
        assert await first.result(timeout=30) == 3
    runs = await chain_of(backend, "countdown")
    assert [run.input for run in runs] == [2, 3]
    assert (await get_run(backend, first.id)).continued_as_id == faults[0] == runs[1].id
