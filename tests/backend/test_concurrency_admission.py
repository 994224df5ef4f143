"""Concurrency admission in the claim: at most ``limit`` runs of a key are running and leased.

Every backend, through the ``Backend`` protocol: runs carry their key and limit
(``CreateWorkflowRunParams``), claims admit by them, and whatever frees a slot
(finishing, failing, canceling, parking, rescheduling) lets the next claim
admit the key's next run. Raw SQL only where a test plays a TypeScript worker.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from openworkflow.core.backend import (
    CancelWorkflowRunParams,
    FailWorkflowRunParams,
    SleepWorkflowRunParams,
)
from openworkflow.core.workflow_run import WorkflowRun
from tests.backend.concurrency_helpers import (
    all_runs,
    claim_slots,
    claim_unrouted_slots,
    complete,
    create_keyed_runs,
    ids,
    leased_per_key,
)
from tests.backend.helpers import (
    RESCHEDULING_RETRY_POLICY,
    TERMINAL_RETRY_POLICY,
    get_run,
    in_one_year,
)
from tests.fixtures.clock import Clock
from tests.fixtures.postgres import prepare_server

WORKFLOW = "limited"


# -- admission within one claim ---------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 2])
async def test_one_claim_admits_only_the_limit_of_a_key(backend: Any, limit: int) -> None:
    hot = await create_keyed_runs(
        backend, 5, workflow_name=WORKFLOW, key="a", limit=limit, seconds_ago=30
    )
    other_key = await create_keyed_runs(
        backend, 1, workflow_name=WORKFLOW, key="b", limit=1, seconds_ago=20
    )
    unlimited = await create_keyed_runs(
        backend, 2, workflow_name=WORKFLOW, key=None, limit=None, seconds_ago=10
    )

    claimed = await claim_slots(backend, 10)

    # The key's first runs in claim order, and everything else alongside them.
    assert ids(claimed) == ids(hot[:limit] + other_key + unlimited)
    assert len({run.worker_id for run in claimed}) == len(claimed)
    assert await claim_slots(backend, 10) == []
    stored = await all_runs(backend)
    assert leased_per_key(stored)[(WORKFLOW, "a")] == limit
    assert all(run.status == "pending" for run in stored if run.id in ids(hot[limit:]))


# -- what frees a slot ------------------------------------------------------------------


async def _complete(backend: Any, run: WorkflowRun) -> None:
    assert (await complete(backend, run)).status == "completed"


async def _fail_for_good(backend: Any, run: WorkflowRun) -> None:
    assert run.worker_id is not None
    failed = await backend.fail_workflow_run(
        FailWorkflowRunParams(
            workflow_run_id=run.id,
            worker_id=run.worker_id,
            error={"message": "boom"},
            retry_policy=TERMINAL_RETRY_POLICY,
        )
    )
    assert failed.status == "failed"


async def _cancel(backend: Any, run: WorkflowRun) -> None:
    canceled = await backend.cancel_workflow_run(CancelWorkflowRunParams(workflow_run_id=run.id))
    assert canceled.status == "canceled"


async def _park(backend: Any, run: WorkflowRun) -> None:
    assert run.worker_id is not None
    parked = await backend.sleep_workflow_run(
        SleepWorkflowRunParams(
            workflow_run_id=run.id, worker_id=run.worker_id, available_at=in_one_year()
        )
    )
    # Parked: still running, but no worker holds it, so it holds no slot.
    assert parked.status == "running" and parked.worker_id is None


async def _fail_with_a_retry(backend: Any, run: WorkflowRun) -> None:
    assert run.worker_id is not None
    retried = await backend.fail_workflow_run(
        FailWorkflowRunParams(
            workflow_run_id=run.id,
            worker_id=run.worker_id,
            error={"message": "boom"},
            retry_policy=RESCHEDULING_RETRY_POLICY,
        )
    )
    # Back to pending after a backoff (about a second): not due in this test.
    assert retried.status == "pending" and retried.worker_id is None


RELEASES: dict[str, Callable[[Any, WorkflowRun], Awaitable[None]]] = {
    "complete": _complete,
    "fail": _fail_for_good,
    "cancel": _cancel,
    "park": _park,
    "retry": _fail_with_a_retry,
}


@pytest.mark.parametrize("release", sorted(RELEASES))
async def test_each_way_out_of_a_lease_frees_the_slot(backend: Any, release: str) -> None:
    runs = await create_keyed_runs(
        backend, 3, workflow_name=WORKFLOW, key="k", limit=1, seconds_ago=30
    )
    [first] = await claim_slots(backend, 5)
    assert first.id == runs[0].id
    assert await claim_slots(backend, 5) == []  # the key is full

    await RELEASES[release](backend, first)

    [second] = await claim_slots(backend, 5)
    assert second.id == runs[1].id
    assert await claim_slots(backend, 5) == []  # and full again


# -- expired leases ---------------------------------------------------------------------


async def test_an_expired_lease_keeps_its_slot_until_that_run_is_taken_over(
    backend: Any, clock: Clock
) -> None:
    # The key is per workflow name: versions share it.
    runs = await create_keyed_runs(
        backend, 1, workflow_name=WORKFLOW, version="v1", key="k", limit=1, seconds_ago=40
    )
    runs += await create_keyed_runs(
        backend, 3, workflow_name=WORKFLOW, version="v2", key="k", limit=1, seconds_ago=30
    )
    [first] = await claim_slots(backend, 1, lease_ms=1_000)
    assert first.id == runs[0].id and first.attempts == 1

    # While the lease is live, nothing of the key is admitted.
    assert await claim_slots(backend, 5) == []

    clock.advance(timedelta(seconds=2))  # the lease expires (app and database clocks)
    # A claim that cannot take the run over (routed to the other version) still
    # finds the key full: the expired lease keeps its slot.
    assert await claim_slots(backend, 5, workflows=[(WORKFLOW, "v2")]) == []
    taken_over = await claim_slots(backend, 5)

    # Only the run being taken over: its old worker may still be executing it,
    # so no other run of the key may start meanwhile.
    assert ids(taken_over) == [first.id]
    assert taken_over[0].attempts == 2 and taken_over[0].lease_expired is True
    assert taken_over[0].worker_id != first.worker_id
    assert await claim_slots(backend, 5) == []
    stored = await all_runs(backend)
    assert leased_per_key(stored)[(WORKFLOW, "k")] == 1
    assert {run.id for run in stored if run.status == "pending"} == set(ids(runs[1:]))


async def test_a_typescript_takeover_frees_the_slot_of_our_holder_entry(
    backend: Any, backend_kind: str, clock: Clock
) -> None:
    """PostgreSQL keeps a key's holders as (run, attempt) entries in ``concurrency_keys``.

    An entry holds its slot while its run is running, leased *and at that
    attempt*. A TypeScript worker knows nothing of keys: when it takes over an
    expired lease it bumps ``attempts`` and leases the run, without touching the
    key row. Our entry's attempt then no longer matches, so the entry is stale
    and the slot is free for our claims. That is the intended trade: limits bind
    across Python workers only; a run a TypeScript worker executes is outside
    them (it would ignore the limit for any run it claims anyway). SQLite
    counts leased runs directly and has no entries, hence PostgreSQL only.
    """
    if backend_kind != "postgres":
        pytest.skip("holder entries (run, attempt) exist on PostgreSQL only")
    runs = await create_keyed_runs(
        backend, 3, workflow_name=WORKFLOW, key="k", limit=1, seconds_ago=30
    )
    [first] = await claim_slots(backend, 1, lease_ms=1_000)
    assert first.id == runs[0].id
    clock.advance(timedelta(seconds=2))

    # As the TypeScript original's claim would: take the run whose lease expired.
    query = sql.SQL(
        'UPDATE {runs} SET "attempts" = "attempts" + 1, "worker_id" = %s, '
        '"available_at" = NOW() + INTERVAL \'60 seconds\', "updated_at" = NOW() '
        'WHERE "namespace_id" = %s AND "id" = %s'
    ).format(runs=sql.Identifier(backend.schema, "workflow_runs"))
    async with await psycopg.AsyncConnection.connect(prepare_server(), autocommit=True) as c:
        await c.execute(query, ("typescript-worker", backend.namespace_id, first.id))
    relet = await get_run(backend, first.id)
    assert (relet.attempts, relet.worker_id) == (2, "typescript-worker")

    # The entry (first, 1) no longer holds: the next run of the key is admitted
    # (exactly one: the limit still binds our own admissions).
    assert ids(await claim_slots(backend, 5)) == [runs[1].id]
    assert await claim_slots(backend, 5) == []


# -- the fair walk over keys ------------------------------------------------------------


@pytest.mark.parametrize("routed", [False, True], ids=["any-workflow", "routed"])
async def test_a_full_hot_key_at_the_front_does_not_hide_other_keys(
    backend: Any, routed: bool
) -> None:
    hot = await create_keyed_runs(
        backend, 100, workflow_name=WORKFLOW, key="a", limit=1, seconds_ago=60
    )
    others: list[WorkflowRun] = []
    for index, key in enumerate("bcdef"):  # behind the hot key, in this order
        others += await create_keyed_runs(
            backend, 1, workflow_name=WORKFLOW, key=key, limit=1, seconds_ago=30 - index
        )
    [holder] = await claim_slots(backend, 1)
    assert holder.id == hot[0].id  # key "a" is now full, its 99 others at the front

    workflows = [(WORKFLOW, None)] if routed else None
    rounds = [ids(await claim_slots(backend, 2, workflows=workflows)) for _ in range(3)]

    assert rounds == [ids(others[0:2]), ids(others[2:4]), ids(others[4:5])]
    assert await claim_slots(backend, 2, workflows=workflows) == []
    assert leased_per_key(await all_runs(backend))[(WORKFLOW, "a")] == 1


# -- limits that change, and claims that ignore or enforce them ---------------------------


async def test_a_lowered_limit_binds_until_the_holders_drop_below_it(backend: Any) -> None:
    old = await create_keyed_runs(
        backend, 3, workflow_name=WORKFLOW, key="k", limit=3, seconds_ago=30
    )
    holders = await claim_slots(backend, 5)
    assert ids(holders) == ids(old)
    new = await create_keyed_runs(
        backend, 2, workflow_name=WORKFLOW, key="k", limit=1, seconds_ago=10
    )

    for holder in holders:
        # 3, then 2, then 1 holders: none is below the new limit of 1.
        assert await claim_slots(backend, 5) == []
        await complete(backend, holder)

    assert ids(await claim_slots(backend, 5)) == [new[0].id]
    assert await claim_slots(backend, 5) == []


async def test_a_claim_that_does_not_enforce_limits_ignores_keys(backend: Any) -> None:
    runs = await create_keyed_runs(
        backend, 5, workflow_name=WORKFLOW, key="k", limit=1, seconds_ago=30
    )

    claimed = await claim_slots(backend, 10, enforce=False)

    assert ids(claimed) == ids(runs)


async def test_unrouted_claims_also_admit_by_the_limits(backend: Any) -> None:
    runs = await create_keyed_runs(
        backend, 5, workflow_name="nobody-runs-this", key="k", limit=1, seconds_ago=30
    )
    unlimited = await create_keyed_runs(
        backend, 2, workflow_name="nobody-runs-this", key=None, limit=None, seconds_ago=10
    )

    first = await claim_unrouted_slots(backend, 10)
    assert ids(first) == ids(runs[:1] + unlimited)
    assert await claim_unrouted_slots(backend, 10) == []

    await complete(backend, first[0])
    assert ids(await claim_unrouted_slots(backend, 10)) == [runs[1].id]


# -- racing claims ----------------------------------------------------------------------


async def test_racing_claims_never_hold_more_than_the_limit(
    backend: Any, make_backend: Callable[[str], Any]
) -> None:
    limit, keys = 2, ["x", "y", "z"]
    created: list[WorkflowRun] = []
    for key in keys:
        created += await create_keyed_runs(
            backend, 10, workflow_name=WORKFLOW, key=key, limit=limit, seconds_ago=30
        )
    instances = [backend, *(make_backend(backend.namespace_id) for _ in range(2))]
    pick = random.Random(7)
    held: dict[str, WorkflowRun] = {}  # run id -> the claim that leased it
    completed: set[str] = set()

    for _ in range(200):
        results = await asyncio.gather(
            *(claim_slots(instance, 3) for instance in instances for _ in range(2))
        )
        for run in (run for batch in results for run in batch):
            assert run.id not in held and run.id not in completed, "a run was claimed twice"
            held[run.id] = run
        _assert_within_limits(await all_runs(backend), held, limit)
        if not held:
            break
        done = held.pop(pick.choice(sorted(held)))
        await complete(backend, done)
        completed.add(done.id)

    assert completed == set(ids(created))
    assert all(run.status == "completed" for run in await all_runs(backend))


def _assert_within_limits(
    stored: list[WorkflowRun], held: dict[str, WorkflowRun], limit: int
) -> None:
    """No key has more than ``limit`` runs leased, in storage or by our own count."""
    per_key = leased_per_key(stored)
    assert max(per_key.values(), default=0) <= limit, per_key
    ours = leased_per_key(list(held.values()))
    assert max(ours.values(), default=0) <= limit, ours
    assert per_key == ours  # storage agrees with what the claims returned
