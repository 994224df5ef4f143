"""Claims and group commits stay key lookups when the table's statistics are stale (PostgreSQL).

A queue table's statistics are a snapshot: the last ANALYZE may have seen no
run of a namespace (a new one) and none pending or running (a quiet hour),
and then a backlog arrives. The planner then takes every index on the
namespace, or on the status, for one row, and was free to drive a claim or a
group commit from them, comparing every run they hold with every candidate
or item (100 x 1,000 comparisons per claim in the big-table benchmark, which
made it 40 % slower). Here 20,000 finished runs of another namespace are
analyzed, then 300 runs are queued in a namespace the statistics never saw;
each claim and step write the backend sends is run again under ``EXPLAIN
ANALYZE`` (rolled back), and no plan node may handle more rows (rows x loops)
than a bound far below the quadratic count.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from benchmarks.scale_data import Shape, generate_postgres
from openworkflow.core.backend import (
    ClaimWorkflowRunsParams,
    CompleteWorkflowRunParams,
    CreateCompletedStepAttemptParams,
)
from openworkflow.core.ids import new_id
from openworkflow.core.workflow_run import WorkflowRun
from tests.backend.helpers import create_pending_run

on_postgres = pytest.mark.parametrize("backend_kind", ["postgres"], indirect=True)

QUEUED = 300
SLOTS = 100
MOST_ROWS_PER_NODE = 2_000
"""A bound on rows x loops for any one plan node: the statements read a few
hundred rows at most; a nested loop over the namespace's runs times the
candidates or items reads 30,000 and more here."""


def _node_rows(plan: dict[str, Any]) -> Iterator[tuple[int, str]]:
    """(rows x loops, description) of each node of a JSON plan."""
    rows = int(plan.get("Actual Rows", 0)) * int(plan.get("Actual Loops", 1))
    removed = int(plan.get("Rows Removed by Join Filter", 0)) + int(
        plan.get("Rows Removed by Filter", 0)
    )
    label = f"{plan['Node Type']} {plan.get('Index Name', plan.get('Relation Name', ''))}"
    yield rows + removed * int(plan.get("Actual Loops", 1)), label
    for child in plan.get("Plans", []):
        yield from _node_rows(child)


class _Explained:
    """Wraps a backend's statement sending: each statement is explained first."""

    def __init__(self, backend: Any, url: str) -> None:
        self._connection = psycopg.connect(url, prepare_threshold=None)
        self.worst: list[tuple[int, str, str]] = []
        for name in ("_fetchall", "_send_claim"):
            send = getattr(backend, name)
            setattr(backend, name, self._explaining(send))

    def _explaining(self, send: Any) -> Any:
        async def explained(query: Any, params: dict[str, Any]) -> Any:
            statement = query if isinstance(query, bytes) else query.as_string(None).encode()
            plan = self._connection.execute(
                b"EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + statement, params
            ).fetchone()
            self._connection.rollback()
            assert plan is not None
            rows, node = max(_node_rows(plan[0][0]["Plan"]))
            self.worst.append((rows, node, statement.decode()[:80]))
            return await send(query, params)

        return explained

    def close(self) -> None:
        self._connection.close()


@pytest.fixture
async def history(backend: Any) -> AsyncIterator[str]:
    """20,000 finished runs of another namespace, analyzed; removed afterwards."""
    await backend.open()  # migrated
    db, namespace = backend._db, f"history-{new_id()}"
    shape = Shape(runs=20_000, pending=0, parked=0)
    await asyncio.to_thread(generate_postgres, db.url, db.schema, namespace, shape)
    yield namespace
    with psycopg.connect(db.url, autocommit=True) as connection:
        for table in ("run_tags", "step_attempts", "workflow_runs"):
            delete = sql.SQL("DELETE FROM {} WHERE namespace_id = %s")
            connection.execute(delete.format(sql.Identifier(db.schema, table)), [namespace])


async def _step_then_complete(backend: Any, run: WorkflowRun) -> None:
    fence = {"workflow_run_id": run.id, "worker_id": run.worker_id, "claim_attempt": run.attempts}
    step = CreateCompletedStepAttemptParams(step_name="one", kind="function", output=1, **fence)
    await backend.create_completed_step_attempt(step)
    await backend.complete_workflow_run(CompleteWorkflowRunParams(output="done", **fence))


@on_postgres
@pytest.mark.parametrize("enforce", [False, True], ids=["plain", "enforcing"])
async def test_claims_and_step_writes_stay_key_lookups(
    backend: Any, history: str, enforce: bool
) -> None:
    for _ in range(QUEUED):  # in a namespace the statistics never saw
        await create_pending_run(backend, workflow_name="queued")
    explained = _Explained(backend, backend._db.url)
    try:
        claimed = await backend.claim_workflow_runs(
            ClaimWorkflowRunsParams(
                worker_ids=[f"slot-{index}" for index in range(SLOTS)],
                lease_duration_ms=60_000,
                workflows=[("queued", None)],
                enforce_concurrency=enforce,
            )
        )
        assert len(claimed) == SLOTS
        # Each run writes a step, then completes: concurrently, so both group commit.
        await asyncio.gather(*(_step_then_complete(backend, run) for run in claimed))
    finally:
        explained.close()
    statements = {text for _, _, text in explained.worst}
    assert any(text.lstrip().startswith("WITH item") for text in statements), statements
    report = "\n".join(f"{rows:>8} {node:<50} {text}" for rows, node, text in explained.worst)
    assert explained.worst, "no statement was captured"
    assert max(rows for rows, _, _ in explained.worst) <= MOST_ROWS_PER_NODE, report
