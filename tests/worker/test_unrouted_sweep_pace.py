"""The sweep for runs no live worker knows: it follows wake-ups, and backs off when idle.

An idle worker used to sweep every 2 s whatever happened: half of its
database queries. Now the pause doubles after each empty sweep with no
wake-up in between, and a wake-up (a new run) brings the next sweep forward.
The pauses are shortened here so the test takes seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from openworkflow import OpenWorkflow, Step, workflow
from openworkflow.worker import presence
from tests.worker.helpers import get_run, running_worker, wait_until


@workflow(name="sweep-pace-known")
async def known(step: Step, input: None) -> None:
    """Registered, never started: the worker needs one workflow."""


def _paced_sweeps(
    backend: Any, monkeypatch: pytest.MonkeyPatch, *, shortest: float, longest: float
) -> list[float]:
    """Shorten the sweep's pauses; record when each sweep went out (a spy on the backend)."""
    monkeypatch.setattr(presence, "UNROUTED_SWEEP_S", shortest)
    monkeypatch.setattr(presence, "UNROUTED_SWEEP_MAX_S", longest)
    times: list[float] = []
    claim = backend.claim_unrouted_workflow_runs

    async def counted(params: Any) -> Any:
        times.append(time.monotonic())
        return await claim(params)

    monkeypatch.setattr(backend, "claim_unrouted_workflow_runs", counted)
    return times


async def test_an_idle_worker_sweeps_less_and_less_often(
    backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweeps = _paced_sweeps(backend, monkeypatch, shortest=0.05, longest=0.4)
    async with running_worker(backend, [known]):
        await asyncio.sleep(2.0)
    # Every 0.05 s that would be about 40 sweeps; pauses of 0.1, 0.2, 0.4, 0.4...
    # make about 7 (a wake-up from the worker's own registration may add one).
    assert 3 <= len(sweeps) <= 12, sweeps
    pauses = [later - earlier for earlier, later in itertools.pairwise(sweeps)]
    assert max(pauses) >= 0.35, pauses


async def test_a_new_run_nobody_knows_is_swept_soon_after_its_wake_up(
    backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweeps = _paced_sweeps(backend, monkeypatch, shortest=0.02, longest=30.0)
    ow = OpenWorkflow(backend)
    async with running_worker(backend, [known]):
        # Sweeps at about 0, 0.04, 0.12, 0.28, 0.6, 1.24, 2.52 s: the next
        # one without a wake-up would come at about 5.08 s.
        await asyncio.sleep(2.7)
        assert len(sweeps) <= 9, "the worker kept sweeping at the shortest pause"
        ghost = await ow.run("sweep-pace-ghost", None)

        async def swept() -> bool:
            return (await get_run(backend, ghost.id)).attempts >= 1

        await wait_until(swept, timeout=1.5, message="the sweep to take the new unknown run")
