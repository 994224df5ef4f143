"""``step.start_workflow``: a child started once across replays and crashes, never waited for."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from openworkflow import Concurrency, OpenWorkflow, Step, workflow
from openworkflow.core.backend import ListWorkflowRunsParams
from openworkflow.errors import InputValidationError
from tests.worker.helpers import get_run, running_worker

RELEASE: dict[str, asyncio.Event] = {}


class Job(BaseModel):
    label: str


@workflow(name="started-child", concurrency=Concurrency(2, key=lambda job: job.label))
async def started_child(input: Job) -> str:
    return f"child {input.label}"


@workflow(name="starter")
async def starter(step: Step, input: dict[str, Any]) -> dict[str, Any]:
    child_id = await step.start_workflow(started_child, {"label": input["label"]})
    # A second pass replays the start: it must find the same child, not make another.
    await step.sleep("pause", "50ms")
    again = await step.start_workflow("started-child", {"label": "by-name"}, name="by-name")
    return {"child": child_id, "by_name": again}


@workflow(name="bad-starter")
async def bad_starter(step: Step) -> str:
    try:
        await step.start_workflow(started_child, {"label": 5})
    except InputValidationError as error:
        return f"refused: {error.workflow_name}"
    return "started"


async def runs_of(backend: Any, name: str) -> list[Any]:
    page = await backend.list_workflow_runs(ListWorkflowRunsParams(workflow_name=name, limit=100))
    return list(page.data)


async def test_a_started_child_is_created_once_and_runs_on_its_own(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    parent = await ow.run(starter, {"label": "a"})
    async with running_worker(backend, [starter, started_child], concurrency=4):
        output = await parent.result(timeout=30)
        child = await get_run(backend, output["child"])
        assert child.workflow_name == "started-child"
        assert child.parent_step_attempt_id is None  # not a waited-for child
        assert (child.concurrency_key, child.concurrency_limit) == ("a", 2)
        by_name = await get_run(backend, output["by_name"])
        assert by_name.input == {"label": "by-name"}
        for run_id in (output["child"], output["by_name"]):
            assert await ow.handle(run_id).result(timeout=30) in {"child a", "child by-name"}
    # Two passes of the parent, two start steps: exactly two children.
    assert len(await runs_of(backend, "started-child")) == 2
    assert (await get_run(backend, parent.id)).attempts == 2


async def test_a_bad_child_input_raises_in_the_parent_and_starts_nothing(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    parent = await ow.run(bad_starter)
    async with running_worker(backend, [bad_starter, started_child]):
        assert await parent.result(timeout=30) == "refused: started-child"
    assert await runs_of(backend, "started-child") == []
