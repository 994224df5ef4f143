"""Claims run on sessions of their own, on cached generic plans (PostgreSQL).

Planning a claim costs more than running it, so claims use the claim pool,
whose sessions set ``plan_cache_mode = force_generic_plan``: each claim is one
statement (no SET and RESET around it, which an idle worker's wake-ups paid as
two extra statements), and every other statement keeps the server's default
planning on the main pool. Those sessions also commit without waiting for the
disk (see ``postgres/connection.py``); every other write waits for it.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from openworkflow.core.backend import ClaimWorkflowRunsParams
from tests.backend.helpers import create_pending_run

on_postgres = pytest.mark.parametrize("backend_kind", ["postgres"], indirect=True)

CLAIMS = 4


def _claim_params(enforce: bool) -> ClaimWorkflowRunsParams:
    return ClaimWorkflowRunsParams(
        worker_ids=["slot-1", "slot-2"], lease_duration_ms=60_000, enforce_concurrency=enforce
    )


async def _setting(pool: Any, name: str) -> str:
    async with pool.connection() as connection:
        row = await (await connection.execute(f"SHOW {name}")).fetchone()
    return str(row[0])


@on_postgres
@pytest.mark.parametrize("enforce", [False, True], ids=["plain", "enforcing"])
async def test_each_claim_is_one_statement_on_a_generic_plan(
    backend: Any, monkeypatch: pytest.MonkeyPatch, enforce: bool
) -> None:
    for _ in range(2 * CLAIMS + 2):
        await create_pending_run(backend, workflow_name="queued")
    await backend.claim_workflow_runs(_claim_params(enforce))  # opens the claim session
    sent: list[str] = []
    execute = psycopg.AsyncConnection.execute

    async def counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(query.decode() if isinstance(query, bytes) else str(query))
        return await execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncConnection, "execute", counted)
    for _ in range(CLAIMS):
        assert len(await backend.claim_workflow_runs(_claim_params(enforce))) == 2
    monkeypatch.undo()

    claims = [text for text in sent if "Runs past their deadline" in text]
    # Besides the claims: at most pings ('') and the setup of a new pooled session.
    setup = "SET SESSION CHARACTERISTICS"
    others = [text for text in sent if text and text not in claims and not text.startswith(setup)]
    assert len(claims) == CLAIMS and not others, others  # no SET / RESET around a claim
    claim_pool = await backend._db.claim_pool()
    generic = custom = 0
    async with claim_pool.connection() as first, claim_pool.connection() as second:
        for connection in (first, second):
            cursor = await connection.execute(
                "SELECT coalesce(sum(generic_plans), 0), coalesce(sum(custom_plans), 0) "
                "FROM pg_prepared_statements"
            )
            row = await cursor.fetchone()
            assert row is not None
            generic, custom = generic + int(row[0]), custom + int(row[1])
    assert (generic, custom) == (CLAIMS + 1, 0)
    assert await _setting(claim_pool, "plan_cache_mode") == "force_generic_plan"
    assert await _setting(claim_pool, "transaction_isolation") == "read committed"
    assert await _setting(claim_pool, "synchronous_commit") == "off"
    # Every other statement plans as the server decides and commits to the disk.
    assert await _setting(await backend._db.pool(), "plan_cache_mode") == "auto"
    assert await _setting(await backend._db.pool(), "synchronous_commit") == "on"
