"""Concurrency limits seen from workers: keyed runs never overlap, parked runs hold no slot.

Admission itself (racing claims, takeovers, the fair walk) is tested on the
backends in ``tests/backend/test_concurrency_admission.py``; these tests run
real workers on both backends and record when each run's body executes.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from pydantic import BaseModel

from openworkflow import Concurrency, OpenWorkflow, Step, workflow
from openworkflow.core.backend import ClaimWorkflowRunsParams
from tests.support.waiting import wait_until
from tests.worker.helpers import get_run, running_worker

# (key, run label, start, end) of every body execution, per test.
INTERVALS: list[tuple[str, str, float, float]] = []
GATES: dict[str, asyncio.Event] = {}


class Job(BaseModel):
    key: str
    label: str
    hold_s: float = 0.05


async def _hold(job: Job) -> str:
    start = time.monotonic()
    await asyncio.sleep(job.hold_s)
    INTERVALS.append((job.key, job.label, start, time.monotonic()))
    return job.label


@workflow(name="one-per-key", concurrency=Concurrency(1, key=lambda job: job.key))
async def one_per_key(step: Step, input: Job) -> str:
    return await step.run("hold", _hold, input)


@workflow(name="napper", concurrency=Concurrency(1, key=lambda job: job.key))
async def napper(step: Step, input: Job) -> str:
    start = time.monotonic()
    INTERVALS.append((input.key, f"{input.label}:before-nap", start, start))
    await step.sleep("nap", "2s")
    now = time.monotonic()
    INTERVALS.append((input.key, f"{input.label}:after-nap", now, now))
    return input.label


def overlapping(key: str) -> list[tuple[str, str]]:
    """Pairs of runs of ``key`` whose bodies overlapped in time."""
    spans = sorted((start, end, label) for k, label, start, end in INTERVALS if k == key)
    return [
        (first[2], second[2]) for first, second in itertools.pairwise(spans) if second[0] < first[1]
    ]


async def test_runs_of_one_key_never_overlap_while_other_keys_run_alongside(backend: Any) -> None:
    INTERVALS.clear()
    ow = OpenWorkflow(backend)
    handles = [
        await ow.run(one_per_key, Job(key=key, label=f"{key}{n}", hold_s=0.1))
        for n in range(4)
        for key in ("a", "b")
    ]
    async with running_worker(backend, [one_per_key], concurrency=6):
        for handle in handles:
            await handle.result(timeout=30)
    assert overlapping("a") == [] and overlapping("b") == []
    # The two keys did run side by side at some point.
    a_spans = [(s, e) for k, _, s, e in INTERVALS if k == "a"]
    b_spans = [(s, e) for k, _, s, e in INTERVALS if k == "b"]
    assert any(bs < ae and as_ < be for as_, ae in a_spans for bs, be in b_spans)


async def test_a_parked_run_holds_no_slot(backend: Any) -> None:
    INTERVALS.clear()
    ow = OpenWorkflow(backend)
    sleeper = await ow.run(napper, Job(key="k", label="first"))
    async with running_worker(backend, [napper, one_per_key], concurrency=4):

        async def first_is_parked() -> bool:
            run = await get_run(backend, sleeper.id)
            return run.status == "sleeping" or (run.status == "running" and not run.worker_id)

        await wait_until(first_is_parked, timeout=10)
        second = await ow.run(napper, Job(key="k", label="second"))

        async def second_started() -> bool:
            return any(label == "second:before-nap" for _, label, _, _ in INTERVALS)

        # The second run of the key starts while the first one sleeps.
        await wait_until(second_started, timeout=10)
        assert (await get_run(backend, sleeper.id)).status != "completed"
        assert await sleeper.result(timeout=30) == "first"
        assert await second.result(timeout=30) == "second"


async def test_a_run_created_by_name_gets_its_key_before_it_runs(backend: Any) -> None:
    INTERVALS.clear()
    ow = OpenWorkflow(backend)
    # By name: the client has no code, so the runs are created without a key.
    handles = [
        await ow.run("one-per-key", {"key": "z", "label": f"z{n}", "hold_s": 0.15})
        for n in range(3)
    ]
    assert all(handle.workflow_run is not None for handle in handles)
    assert all(handle.workflow_run.concurrency_key is None for handle in handles)  # type: ignore[union-attr]
    async with running_worker(backend, [one_per_key], concurrency=4):
        for handle in handles:
            await handle.result(timeout=30)
    assert overlapping("z") == []
    for handle in handles:
        run = await get_run(backend, handle.id)
        # Keyed and queued again before its body ran: one pass only.
        assert (run.concurrency_key, run.concurrency_limit, run.attempts) == ("z", 1, 1)


async def test_a_worker_without_limited_workflows_sends_the_claim_that_ignores_keys(
    backend: Any, monkeypatch: Any
) -> None:
    sent: list[bool] = []
    claim = backend.claim_workflow_runs

    async def spy(params: ClaimWorkflowRunsParams) -> Any:
        sent.append(params.enforce_concurrency)
        return await claim(params)

    monkeypatch.setattr(backend, "claim_workflow_runs", spy)

    @workflow(name="plain")
    async def plain() -> str:
        return "done"

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [plain]):
        assert await (await ow.run(plain)).result(timeout=10) == "done"
    async with running_worker(backend, [plain, one_per_key]):
        run = await ow.run(one_per_key, Job(key="q", label="q"))
        assert await run.result(timeout=10) == "q"
    assert False in sent and True in sent
