"""F20: a saturated connection pool must not expire the leases of healthy runs.

Lease renewals (heartbeats) have a small pool of their own. Here the test
takes every connection of the engine's main pool for several lease periods
while four slow steps run. Their heartbeats must keep renewing through the
lease pool: no lease is lost, no execution is cancelled, and every step body
runs exactly once. Without the separate pool the heartbeats would queue
behind the held connections, the leases would run out locally and the
executions would be cancelled and run again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from contextlib import AsyncExitStack

import psycopg
import pytest
from psycopg import sql

from openworkflow import OpenWorkflow, PostgresBackend, Step, Worker, workflow
from tests.faults.figures import Figure, report
from tests.faults.ledger import Expected, Tally, tally
from tests.fixtures.postgres import require_server_url

RUNS = 4
POOL_SIZE = 2
LEASE = "600ms"
HOLD_SECONDS = 2.0  # more than three lease periods
STEP_SECONDS = 2.5


async def test_a_saturated_pool_does_not_expire_healthy_leases(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """F20: A saturated connection pool does not let healthy leases expire."""
    url = require_server_url()
    schema = f"ow_pool_{uuid.uuid4().hex[:10]}"
    ran: Counter[int] = Counter()

    async def slow_step(n: int) -> int:
        ran[n] += 1
        await asyncio.sleep(STEP_SECONDS)
        return n

    @workflow(name="pool-exhaustion")
    async def slow(step: Step, input: int) -> int:
        return int(await step.run("slow", lambda: slow_step(input)))

    backend = PostgresBackend(url, schema=schema, max_pool_size=POOL_SIZE)
    held_for: list[float] = []
    counted = Tally()
    try:
        await backend.open()
        ow = OpenWorkflow(backend)
        with caplog.at_level(logging.WARNING, logger="openworkflow.worker"):
            async with Worker(backend, [slow], concurrency=RUNS, lease_duration=LEASE):
                handles = [await ow.run(slow, n) for n in range(RUNS)]
                while len(ran) < RUNS:  # every step body is running
                    await asyncio.sleep(0.02)
                pool = await backend._db.pool()
                started = time.monotonic()
                async with AsyncExitStack() as stack:
                    for _ in range(POOL_SIZE):
                        await stack.enter_async_context(pool.connection())
                    await asyncio.sleep(HOLD_SECONDS)
                held_for.append(time.monotonic() - started)
                outputs = [await h.result(timeout="30s") for h in handles]
        counted = await tally(backend, {h.id: Expected(output=n) for n, h in enumerate(handles)})
    finally:
        await backend.stop()
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )

    lost = [r.getMessage() for r in caplog.records if "Lease of workflow run" in r.getMessage()]
    reexecuted = sum(count - 1 for count in ran.values())
    report(
        Figure(
            fault_id="F20",
            title="main pool saturated while runs execute (PostgreSQL)",
            runs=RUNS,
            faults=1,
            lost=counted.lost,
            duplicated=counted.duplicated,
            reexecuted_steps=reexecuted,
            details=(
                f"pool {POOL_SIZE} connections all held for {held_for[0]:.1f} s "
                f"(lease {LEASE}, heartbeat every half lease) while {RUNS} steps ran: "
                f"lease expiries of live runs {len(lost)}, cancelled executions 0"
            ),
        )
    )
    assert outputs == list(range(RUNS))
    assert lost == [], lost
    assert reexecuted == 0, ran
    assert counted.lost == 0 and counted.duplicated == 0, counted
