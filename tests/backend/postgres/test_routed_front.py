"""Routed claims past the front of the queue (PostgreSQL's two-step routed claim).

A routed claim first looks at the first ``front_limit`` due pending runs in
claim order, then, when those held too few of the worker's runs, at each
registered workflow's own runs from the front's last run on (``_PAST_FRONT``
in ``openworkflow/postgres/claim_queries.py``). A queue of a few runs never
reaches past a front of 64, so these tests shrink the front to three runs.
"""

from __future__ import annotations

from typing import Any

import pytest

from openworkflow.postgres import runs
from tests.backend.concurrency_helpers import claim_slots
from tests.backend.helpers import create_pending_run

pytestmark = pytest.mark.parametrize("backend_kind", ["postgres"], indirect=True)

FRONT = 3


@pytest.fixture(autouse=True)
def short_front(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runs, "ROUTED_FRONT_BASE", FRONT)
    monkeypatch.setattr(runs, "ROUTED_FRONT_PER_RUN", 0)


async def _queue(backend: Any, names: list[str]) -> list[str]:
    """Create one pending run per name, oldest first; their ids."""
    return [(await create_pending_run(backend, workflow_name=name)).id for name in names]


@pytest.mark.parametrize("enforce", [True, False], ids=["enforcing", "plain"])
async def test_runs_beyond_a_front_of_other_workflows_are_found_in_order(
    backend: Any, enforce: bool
) -> None:
    ids = await _queue(backend, ["other"] * 5 + ["mine"] * 3)
    claimed = await claim_slots(backend, 2, workflows=[("mine", None)], enforce=enforce)
    assert sorted(run.id for run in claimed) == sorted(ids[5:7])


@pytest.mark.parametrize("enforce", [True, False], ids=["enforcing", "plain"])
async def test_the_front_run_and_the_next_ones_past_it_are_taken_together(
    backend: Any, enforce: bool
) -> None:
    # The front is other, other, mine-1: it takes mine-1; the per-route pick
    # starts at mine-1 (taken, so left out) and finds mine-2 next, not mine-3.
    ids = await _queue(backend, ["other", "other", "mine", "other", "other", "mine", "mine"])
    claimed = await claim_slots(backend, 2, workflows=[("mine", None)], enforce=enforce)
    assert sorted(run.id for run in claimed) == sorted([ids[2], ids[5]])


async def test_a_routed_claim_with_nothing_due_takes_nothing(backend: Any) -> None:
    await _queue(backend, ["other"] * 2)
    assert await claim_slots(backend, 2, workflows=[("mine", None)]) == []
