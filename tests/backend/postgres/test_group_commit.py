"""Group commit on PostgreSQL: concurrent step writes share statements, each keeps its fence."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from openworkflow.core.backend import CompleteWorkflowRunParams, CreateCompletedStepAttemptParams
from openworkflow.errors import BackendError, WriteConflictError
from openworkflow.group_commit import GroupCommit
from tests.backend.helpers import create_claimed_run, get_run, list_steps

on_postgres = pytest.mark.parametrize("backend_kind", ["postgres"], indirect=True)


def _quick_step(run: Any, name: str, output: Any, worker_id: str | None = None) -> Any:
    return CreateCompletedStepAttemptParams(
        workflow_run_id=run.id,
        worker_id=worker_id or run.worker_id,
        step_name=name,
        kind="function",
        output=output,
    )


@on_postgres
async def test_concurrent_step_writes_share_statements(backend: Any) -> None:
    runs = [await create_claimed_run(backend) for _ in range(20)]
    statements: list[int] = []
    write = backend._step_inserts._write_batch

    async def counting(items: Sequence[Any]) -> Any:
        statements.append(len(items))
        return await write(items)

    backend._step_inserts._write_batch = counting
    await asyncio.gather(
        *(
            backend.create_completed_step_attempt(_quick_step(run, "s", i))
            for i, run in enumerate(runs)
        )
    )

    assert sum(statements) == 20
    assert len(statements) < 20, statements
    for i, run in enumerate(runs):
        assert [step.output for step in await list_steps(backend, run.id)] == [i]


@on_postgres
async def test_a_statement_error_fails_only_the_bad_item(backend: Any) -> None:
    run = await create_claimed_run(backend)
    # A step name PostgreSQL cannot store (NUL) makes the batch's statement fail.
    outcomes = await asyncio.gather(
        backend.create_completed_step_attempt(_quick_step(run, "good-1", 1)),
        backend.create_completed_step_attempt(_quick_step(run, "bad\x00name", 2)),
        backend.create_completed_step_attempt(_quick_step(run, "good-2", 3)),
        return_exceptions=True,
    )

    assert not isinstance(outcomes[0], BaseException)
    assert isinstance(outcomes[1], BackendError)
    assert not isinstance(outcomes[2], BaseException)
    steps = await list_steps(backend, run.id)
    assert sorted(step.step_name for step in steps) == ["good-1", "good-2"]


@on_postgres
async def test_a_write_for_a_run_lost_meanwhile_fails_alone(backend: Any) -> None:
    mine = await create_claimed_run(backend)
    other = await create_claimed_run(backend)
    outcomes = await asyncio.gather(
        backend.create_completed_step_attempt(_quick_step(mine, "a", 1)),
        backend.create_completed_step_attempt(_quick_step(other, "b", 2, worker_id="zombie")),
        return_exceptions=True,
    )
    assert not isinstance(outcomes[0], BaseException)
    assert isinstance(outcomes[1], WriteConflictError)
    assert await list_steps(backend, other.id) == []


async def test_group_commit_batches_what_queues_while_a_write_is_in_flight() -> None:
    batches: list[list[int]] = []
    release = asyncio.Event()

    async def write_batch(items: Sequence[int]) -> list[int | BaseException]:
        batches.append(list(items))
        if len(batches) == 1:
            await release.wait()
        return [item * 10 if item >= 0 else ValueError(f"bad {item}") for item in items]

    group: GroupCommit[int, int] = GroupCommit(write_batch, max_in_flight=1)
    first = asyncio.ensure_future(group.submit(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(group.submit(item)) for item in (2, -3, 4)]
    cancelled = asyncio.ensure_future(group.submit(5))
    await asyncio.sleep(0)
    cancelled.cancel()
    release.set()

    assert await first == 10
    outcomes = await asyncio.gather(*rest, return_exceptions=True)
    assert outcomes[0] == 20 and outcomes[2] == 40
    assert isinstance(outcomes[1], ValueError)
    # The cancelled caller's item was never sent.
    assert batches == [[1], [2, -3, 4]]


async def test_group_commit_gives_a_failed_statement_to_every_caller_of_its_batch() -> None:
    async def write_batch(items: Sequence[int]) -> list[int | BaseException]:
        raise BackendError("connection lost")

    group: GroupCommit[int, int] = GroupCommit(write_batch)
    outcomes = await asyncio.gather(group.submit(1), group.submit(2), return_exceptions=True)
    assert all(isinstance(outcome, BackendError) for outcome in outcomes)


@on_postgres
async def test_concurrent_completions_share_statements_and_keep_their_fences(backend: Any) -> None:
    runs = [await create_claimed_run(backend) for _ in range(10)]
    statements: list[int] = []
    write = backend._completions._write_batch

    async def counting(items: Sequence[Any]) -> Any:
        statements.append(len(items))
        return await write(items)

    backend._completions._write_batch = counting
    outcomes = await asyncio.gather(
        *(
            backend.complete_workflow_run(
                CompleteWorkflowRunParams(
                    workflow_run_id=run.id,
                    worker_id="zombie" if i == 3 else run.worker_id,
                    output={"n": i},
                )
            )
            for i, run in enumerate(runs)
        ),
        return_exceptions=True,
    )

    assert isinstance(outcomes[3], WriteConflictError)
    assert len(statements) < 10 and sum(statements) == 10, statements
    for i, run in enumerate(runs):
        stored = await get_run(backend, run.id)
        if i == 3:
            assert stored.status == "running" and stored.output is None
        else:
            assert outcomes[i] == stored
            assert stored.status == "completed" and stored.output == {"n": i}
