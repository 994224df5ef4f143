"""The claim's deadline sweep and an owner recording a step at the same moment.

The sweep fails runs past their deadline and closes their running attempts in
one statement. Had it waited for an owner holding the run (inserting a step),
its snapshot would not see that step, and the failed run would keep it running.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg import sql

from openworkflow.postgres import PostgresBackend
from openworkflow.postgres.schema import drop_schema
from tests.backend.helpers import claim, create_claimed_run, get_run, list_steps
from tests.fixtures.postgres import require_server_url


@pytest.fixture
async def backend() -> AsyncIterator[PostgresBackend]:
    url = require_server_url()
    schema = "ow_t_" + uuid.uuid4().hex[:12]
    opened = PostgresBackend(url, "sweep", schema=schema)
    try:
        yield opened
    finally:
        await opened.stop()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
            await drop_schema(connection, schema)


async def test_a_run_held_by_its_owner_is_expired_later_with_its_new_step_closed(
    backend: PostgresBackend,
) -> None:
    run = await create_claimed_run(backend)
    runs = sql.Identifier(backend.schema, "workflow_runs")
    steps = sql.Identifier(backend.schema, "step_attempts")
    url = require_server_url()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        await admin.execute(
            sql.SQL("UPDATE {} SET deadline_at = NOW() - interval '1 second' WHERE id = %s").format(
                runs
            ),
            (run.id,),
        )
    async with await psycopg.AsyncConnection.connect(url) as owner:
        # The owner records a step the way the backend does: run row locked first.
        await owner.execute(
            sql.SQL(
                "SELECT 1 FROM {} WHERE namespace_id = %s AND id = %s FOR NO KEY UPDATE"
            ).format(runs),
            (run.namespace_id, run.id),
        )
        await owner.execute(
            sql.SQL(
                "INSERT INTO {} (namespace_id, id, workflow_run_id, step_name, kind, status,"
                " config, started_at, created_at, updated_at)"
                " VALUES (%s, %s, %s, 'late', 'function', 'running', '{{}}', NOW(),"
                " date_trunc('milliseconds', NOW()), NOW())"
            ).format(steps),
            (run.namespace_id, str(uuid.uuid4()), run.id),
        )
        sweep = asyncio.create_task(claim(backend))
        done, _ = await asyncio.wait({sweep}, timeout=2)
        assert done, "the claim waited for the owner's transaction instead of skipping its run"
        await owner.commit()
    await sweep
    await claim(backend)  # the next claim expires the run, now with the step in sight
    assert (await get_run(backend, run.id)).status == "failed"
    attempts = await list_steps(backend, run.id)
    assert [(a.step_name, a.status) for a in attempts] == [("late", "failed")]
