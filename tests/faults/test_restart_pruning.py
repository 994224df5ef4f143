"""F3 for retention: a pruning pass cut by a PostgreSQL restart leaves no half-pruned run.

The test runs in a throwaway cluster of its own (the ``cluster`` fixture of
:mod:`tests.faults.private_cluster`), restarted with ``pg_ctlcluster ...
restart -m immediate``. Everything is counted from the database and reported
before it is asserted.

Hundreds of finished runs (with step attempts, a child run, an event, a
stream item and a tag each) are aged past the retention; a pruning pass (the
worker's ``RetentionPruner``, small batches) is stopped in the middle of a
batch once a few batches are gone (the test then holds row locks on the
stream rows of the runs left, so the next batch waits inside the server) and
the cluster is restarted. Afterwards no run is half pruned (a run is either
whole or gone with every row of it, no row is left without its run), the next
pass prunes the rest, and the live runs (recent, pending, parked) are
untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from openworkflow import OpenWorkflow, Step, Worker, workflow
from openworkflow.errors import OpenWorkflowError
from openworkflow.postgres import PostgresBackend
from openworkflow.worker.retention import RetentionPruner
from tests.faults.figures import Figure, report
from tests.faults.ledger import Expected, tally
from tests.faults.pg_app import new_schema_name
from tests.faults.private_cluster import PrivateCluster, fetch_rows

pytestmark = pytest.mark.slow

DEADLINE_S = 90.0


# -- pruning cut by a restart ------------------------------------------------------------------

OLD_PARENTS = 120
"""Finished parent runs aged past the retention (each with a finished child: twice as many runs)."""
RECENT_PARENTS = 10
"""Finished parent runs inside the retention (kept, with their children)."""
PRUNE_BATCH = 10
PRUNE_PAUSE_S = 0.05
"""Pause between batches: time for the test to lock rows between two of them."""
POLICY = {"completed": "7d"}
RUN_TABLES = ("step_attempts", "run_events", "run_streams", "run_tags", "run_messages")
"""Tables whose rows belong to one run (``workflow_run_id``): pruned with it, never without it."""


async def _child_step(n: int) -> int:
    return n * 2


@workflow(name="fault-prune-child")
async def _prune_child(input: Any, step: Step) -> int:
    """One step: doubles ``input["n"]``."""
    return int(await step.run("double", functools.partial(_child_step, int(input["n"]))))


async def _parent_step(n: int) -> int:
    return n + 1


@workflow(name="fault-prune-parent")
async def _prune_parent(input: Any, step: Step) -> int:
    """A step, an event, a stream item and a child run: every kind of row pruning removes."""
    n = int(input["n"])
    first = int(await step.run("first", functools.partial(_parent_step, n)))
    await step.set_event("progress", {"n": n})
    await step.stream("log", {"n": n})
    child = int(await step.run_workflow(_prune_child, {"n": n}))
    return first + child


@workflow(name="fault-prune-napping")
async def _prune_napping(step: Step) -> None:
    """Parks for an hour: an old run that is not finished, never pruned."""
    await step.sleep("nap", "1h")


@workflow(name="fault-prune-unclaimed")
async def _prune_unclaimed(step: Step) -> None:
    """No worker runs it: an old pending run, never pruned."""


@dataclass(frozen=True)
class _Where:
    url: str
    schema: str
    namespace: str

    def table(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, name)


def _rows_per_run(where: _Where) -> dict[str, tuple[str | None, tuple[int, ...]]]:
    """Per run id (of runs and of rows left without their run): (status or None, rows per table)."""
    runs = {
        run_id: status
        for run_id, status in fetch_rows(
            where.url,
            sql.SQL("SELECT id, status FROM {} WHERE namespace_id = %s").format(
                where.table("workflow_runs")
            ),
            (where.namespace,),
        )
    }
    counts: dict[str, list[int]] = {run_id: [0] * len(RUN_TABLES) for run_id in runs}
    for index, name in enumerate(RUN_TABLES):
        for run_id, count in fetch_rows(
            where.url,
            sql.SQL(
                "SELECT workflow_run_id, count(*) FROM {} WHERE namespace_id = %s GROUP BY 1"
            ).format(where.table(name)),
            (where.namespace,),
        ):
            counts.setdefault(run_id, [0] * len(RUN_TABLES))[index] = int(count)
    return {run_id: (runs.get(run_id), tuple(row)) for run_id, row in counts.items()}


def _half_pruned(
    before: dict[str, tuple[str | None, tuple[int, ...]]],
    after: dict[str, tuple[str | None, tuple[int, ...]]],
) -> list[str]:
    """Runs neither whole (as before) nor wholly gone, and rows left without their run."""
    broken = [
        run_id
        for run_id, now in after.items()
        if (now[0] is None and any(now[1])) or (now[0] is not None and now != before.get(run_id))
    ]
    return sorted(broken)


async def _finished_runs(ow: OpenWorkflow, count: int) -> None:
    """``count`` parent runs (each with a tag), waited for until they completed."""
    handles = [await ow.run(_prune_parent, {"n": n}, tags={"batch": "b"}) for n in range(count)]
    for handle in handles:
        await handle.result(timeout=f"{DEADLINE_S:.0f}s")


def _age_every_run(where: _Where) -> None:
    """Make every run of the namespace 30 days older (created, finished, available)."""
    fetch_rows(
        where.url,
        sql.SQL(
            "UPDATE {} SET created_at = created_at - interval '30 days', "
            "finished_at = finished_at - interval '30 days' WHERE namespace_id = %s "
            "RETURNING 1"
        ).format(where.table("workflow_runs")),
        (where.namespace,),
    )


def _old_finished(where: _Where) -> list[str]:
    """Completed runs past the retention, oldest first (what a pass should prune)."""
    return [
        row[0]
        for row in fetch_rows(
            where.url,
            sql.SQL(
                "SELECT id FROM {} WHERE namespace_id = %s AND status = 'completed' "
                "AND finished_at < now() - interval '7 days' ORDER BY created_at, id"
            ).format(where.table("workflow_runs")),
            (where.namespace,),
        )
    ]


async def _prepare_runs(where: _Where, client: PostgresBackend, worker_backend: Any) -> None:
    """Old finished runs with their rows, an old parked and an old pending run, recent runs."""
    ow = OpenWorkflow(client)
    registered = [_prune_parent, _prune_child, _prune_napping]
    async with Worker(worker_backend, registered, concurrency=20, lease_duration="5s"):
        await _finished_runs(ow, OLD_PARENTS)
        napping = await ow.run(_prune_napping)
        await ow.run(_prune_unclaimed)
        deadline = time.monotonic() + DEADLINE_S
        while not fetch_rows(
            where.url,
            sql.SQL("SELECT 1 FROM {} WHERE workflow_run_id = %s").format(
                where.table("step_attempts")
            ),
            (napping.id,),
        ):
            assert time.monotonic() < deadline, "the napping run never parked"
            await asyncio.sleep(0.05)
        _age_every_run(where)
        await _finished_runs(ow, RECENT_PARENTS)


@dataclass
class _PruneStrike:
    """What the strike found: runs pruned before it, and how the cut pass ended."""

    waited: bool = False
    pruned_before: int = 0
    first_pass: str = ""


async def _cut_a_pass(
    where: _Where, cluster: PrivateCluster, pruner: RetentionPruner
) -> _PruneStrike:
    """Start a pass; once a few batches are gone, hold it inside a batch and restart under it.

    The test locks the stream rows of every old run left (skipping those the
    batch under way holds, which would deadlock), so the pass's next batch
    waits inside the server: its runs locked, some of their rows perhaps
    deleted in its uncommitted transaction. Then the cluster restarts.
    """
    old = _old_finished(where)
    strike = _PruneStrike()
    task = asyncio.create_task(pruner.prune_once())
    deadline = time.monotonic() + DEADLINE_S
    while len(old) - len(_old_finished(where)) < 2 * PRUNE_BATCH:
        assert not task.done(), "the pass ended before the strike"
        assert time.monotonic() < deadline, "the pass pruned nothing"
        await asyncio.sleep(0.005)
    holder = psycopg.connect(where.url, connect_timeout=5)
    try:
        holder.execute(
            sql.SQL(
                "SELECT 1 FROM {} WHERE namespace_id = %s AND workflow_run_id = ANY(%s) "
                "FOR UPDATE SKIP LOCKED"
            ).format(where.table("run_streams")),
            (where.namespace, _old_finished(where)),
        )
        while not strike.waited:
            assert not task.done(), "the pass ended without waiting on the locked rows"
            assert time.monotonic() < deadline, "the pass never waited on the locked rows"
            await asyncio.sleep(0.01)
            strike.waited = bool(
                fetch_rows(
                    where.url, "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                )
            )
        strike.pruned_before = len(old) - len(_old_finished(where))
        await asyncio.to_thread(cluster.restart, "immediate")
    finally:
        with contextlib.suppress(psycopg.Error):
            holder.close()
    try:
        strike.first_pass = f"deleted {await asyncio.wait_for(task, DEADLINE_S)}"
    except OpenWorkflowError as error:
        strike.first_pass = f"raised {type(error).__name__}"
    return strike


async def test_pruning_cut_by_a_restart_leaves_no_half_pruned_run(cluster: PrivateCluster) -> None:
    """A pass cut mid-batch by an immediate restart: whole runs or none; the next pass finishes."""
    where = _Where(cluster.url, new_schema_name(), f"prune-{uuid.uuid4().hex[:8]}")
    client = PostgresBackend(where.url, namespace_id=where.namespace, schema=where.schema)
    worker_backend = PostgresBackend(where.url, namespace_id=where.namespace, schema=where.schema)
    pruner = RetentionPruner(
        client, POLICY, batch_size=PRUNE_BATCH, batches_per_pass=10_000, pause=PRUNE_PAUSE_S
    )
    try:
        await client.open()
        await _prepare_runs(where, client, worker_backend)
        before = _rows_per_run(where)
        old = set(_old_finished(where))
        live = {run_id: row for run_id, row in before.items() if run_id not in old}
        strike = await _cut_a_pass(where, cluster, pruner)
        after_strike = _rows_per_run(where)
        second_pass = await pruner.prune_once()
        after = _rows_per_run(where)
        left = set(_old_finished(where))
        counted = await tally(
            client, {run_id: Expected(status=str(row[0])) for run_id, row in live.items()}
        )
    finally:
        await worker_backend.stop()
        await client.stop()
    half_pruned = set(_half_pruned(before, after_strike)) | set(_half_pruned(before, after))
    live_changed = {run_id for run_id, row in live.items() if after.get(run_id) != row}
    lost = half_pruned | live_changed | set(counted.lost_runs)
    report(
        Figure(
            fault_id="F3",
            title="retention pruning cut mid-batch by a PostgreSQL immediate restart",
            runs=len(before),
            faults=1,
            lost=len(lost),
            duplicated=counted.duplicated,
            details=(
                f"{len(old)} finished runs past the retention (with steps, child, event, "
                f"stream item, tag), {len(live)} live runs; {strike.pruned_before} pruned "
                f"before the restart, the cut pass {strike.first_pass}, the next pass "
                f"deleted {second_pass}, {len(left)} left; half-pruned runs "
                f"{len(half_pruned)}, live runs changed {len(live_changed)}; batches of "
                f"{PRUNE_BATCH}"
            ),
        )
    )
    assert strike.waited, "the restart did not land inside a batch"
    assert 0 < strike.pruned_before < len(old), "the restart did not land mid-pass"
    assert not half_pruned, f"runs half pruned: {sorted(half_pruned)[:10]}"
    assert not left, f"{len(left)} prunable runs left after the next pass"
    assert not live_changed, f"live runs changed: {sorted(live_changed)[:10]}"
    assert len(lost) == 0 and counted.duplicated == 0, counted
