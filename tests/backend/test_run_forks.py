"""fork_workflow_run, get_run_fork and list_run_forks: a new run with copied attempts, linked."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openworkflow.core.backend import (
    CompleteStepAttemptParams,
    FailWorkflowRunParams,
    GetWorkflowRunParams,
    ListStepAttemptsParams,
)
from openworkflow.core.forks import ForkWorkflowRunParams, RunFork
from openworkflow.errors import WorkflowRunNotFoundError
from tests.backend.helpers import TERMINAL_RETRY_POLICY, create_claimed_run, create_step, new_id


async def _finished_run_with_steps(backend: Any, names: list[str]) -> tuple[Any, list[Any]]:
    run = await create_claimed_run(backend, input={"order": 7})
    attempts = []
    for name in names:
        attempt = await create_step(backend, run, step_name=name)
        completed = await backend.complete_step_attempt(
            CompleteStepAttemptParams(
                workflow_run_id=run.id,
                step_attempt_id=attempt.id,
                worker_id=str(run.worker_id),
                output={"step": name},
            )
        )
        attempts.append(completed)
        await asyncio.sleep(0.002)  # distinct created_at: the order is kept by time
    await backend.fail_workflow_run(
        FailWorkflowRunParams(
            workflow_run_id=run.id,
            worker_id=str(run.worker_id),
            error={"name": "Error", "message": "charge failed"},
            retry_policy=TERMINAL_RETRY_POLICY,
        )
    )
    return run, attempts


async def _steps(backend: Any, run_id: str) -> list[Any]:
    page = await backend.list_step_attempts(ListStepAttemptsParams(workflow_run_id=run_id))
    return sorted(page.data, key=lambda attempt: (attempt.created_at, attempt.id))


async def test_a_fork_copies_the_chosen_attempts_and_is_linked(backend: Any) -> None:
    source, attempts = await _finished_run_with_steps(backend, ["reserve", "charge", "ship"])
    fork_id = await backend.fork_workflow_run(
        ForkWorkflowRunParams(
            source_run_id=source.id,
            from_step="charge",
            copied_attempt_ids=[attempts[0].id],
        )
    )
    fork = await backend.get_workflow_run(GetWorkflowRunParams(workflow_run_id=fork_id))
    assert fork is not None and fork.id != source.id
    assert (fork.workflow_name, fork.version, fork.input) == (
        source.workflow_name,
        source.version,
        {"order": 7},
    )
    assert (fork.status, fork.attempts, fork.worker_id, fork.idempotency_key) == (
        "pending",
        0,
        None,
        None,
    )
    copied = await _steps(backend, fork_id)
    assert [(a.step_name, a.status, a.output) for a in copied] == [
        ("reserve", "completed", {"step": "reserve"})
    ]
    assert copied[0].id != attempts[0].id and copied[0].workflow_run_id == fork_id
    assert copied[0].created_at == attempts[0].created_at  # the replay order is the source's
    assert len(await _steps(backend, source.id)) == 3  # the source is untouched
    link = await backend.get_run_fork(fork_id)
    assert isinstance(link, RunFork)
    assert (link.workflow_run_id, link.forked_from_id, link.from_step) == (
        fork_id,
        source.id,
        "charge",
    )
    assert await backend.get_run_fork(source.id) is None
    assert [f.workflow_run_id for f in await backend.list_run_forks(source.id)] == [fork_id]


async def test_the_input_may_be_replaced(backend: Any) -> None:
    source, _ = await _finished_run_with_steps(backend, ["a"])
    for replacement in ({"order": 8}, None):
        fork_id = await backend.fork_workflow_run(
            ForkWorkflowRunParams(
                source_run_id=source.id,
                from_step="a",
                copied_attempt_ids=[],
                input=replacement,
                replace_input=True,
            )
        )
        fork = await backend.get_workflow_run(GetWorkflowRunParams(workflow_run_id=fork_id))
        assert fork is not None and fork.input == replacement
        assert await _steps(backend, fork_id) == []
    assert len(await backend.list_run_forks(source.id)) == 2


async def test_forking_a_missing_run_raises_and_writes_nothing(backend: Any) -> None:
    missing = new_id()
    with pytest.raises(WorkflowRunNotFoundError):
        await backend.fork_workflow_run(
            ForkWorkflowRunParams(source_run_id=missing, from_step="a", copied_attempt_ids=[])
        )
    assert await backend.list_run_forks(missing) == []
    assert (await backend.count_workflow_runs()).pending == 0
