"""Closing a backend leaves nothing behind (issue 14, item 1).

After ``stop()`` no asyncio task the backend started is left, no thread it
started is alive, and (PostgreSQL) no connection of its pools is open or
opens later, even when ``stop()`` comes while the first call is still
connecting and migrating. Each PostgreSQL test works in a fresh schema and
tags its connections with a unique ``application_name`` to find them in
``pg_stat_activity``.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from openworkflow import OpenWorkflow
from openworkflow.core.backend import ExtendWorkflowRunLeaseParams
from openworkflow.errors import BackendClosedError
from openworkflow.notifications import notifier_of
from openworkflow.postgres import PostgresBackend
from openworkflow.sqlite import SqliteBackend
from tests.backend.helpers import claim, create_pending_run
from tests.fixtures.postgres import require_server_url
from tests.support.waiting import wait_until

LATE_CONNECT_WAIT_S = 1.0
"""How long to keep looking for a connection opened after stop() returned."""


def _other_tasks(before: set[asyncio.Task[Any]]) -> list[str]:
    current = asyncio.current_task()
    return sorted(task.get_name() for task in asyncio.all_tasks() - before if task is not current)


def _connections(url: str, application_name: str) -> int:
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchone()
    return 0 if row is None else int(row[0])


@pytest.fixture
def postgres_target() -> Iterator[tuple[str, str, str]]:
    """(server URL, URL tagged with a unique application_name, fresh schema); dropped after."""
    url = require_server_url()
    name, schema = f"ow_close_{uuid.uuid4().hex[:10]}", f"ow_close_{uuid.uuid4().hex[:10]}"
    separator = "&" if "?" in url else "?"
    yield url, f"{url}{separator}application_name={quote(name)}", schema
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def _wait_for_no_connections(url: str, application_name: str) -> None:
    # A server process leaves pg_stat_activity a moment after its client closed.
    async def closed() -> bool:
        return await asyncio.to_thread(_connections, url, application_name) == 0

    await wait_until(
        closed,
        timeout=5.0,
        interval=0.05,
        message=f"the connections named {application_name} to close after stop()",
    )


async def _assert_nothing_left(url: str, tagged: str, before: set[asyncio.Task[Any]]) -> None:
    application_name = tagged.rpartition("application_name=")[2]
    assert _other_tasks(before) == []
    await _wait_for_no_connections(url, application_name)
    await asyncio.sleep(LATE_CONNECT_WAIT_S)  # a pool still connecting would show up now
    assert _other_tasks(before) == []
    assert await asyncio.to_thread(_connections, url, application_name) == 0


async def test_postgres_stop_leaves_no_task_and_no_connection(
    postgres_target: tuple[str, str, str],
) -> None:
    url, tagged, schema = postgres_target
    before = asyncio.all_tasks()
    backend = PostgresBackend(tagged, schema=schema)
    run = await create_pending_run(backend)
    claimed = await claim(backend)
    assert claimed is not None and claimed.id == run.id and claimed.worker_id is not None
    # The lease pool opens on the first renewal; many calls at once grow the main pool.
    await backend.extend_workflow_run_lease(
        ExtendWorkflowRunLeaseParams(
            workflow_run_id=run.id, worker_id=claimed.worker_id, lease_duration_ms=30_000
        )
    )
    ow = OpenWorkflow(backend)
    await asyncio.gather(*(ow.list_runs() for _ in range(20)))
    assert _other_tasks(before) != []  # the pools and the listener are running
    await backend.stop()
    await _assert_nothing_left(url, tagged, before)


async def test_postgres_stop_during_the_first_open_leaves_nothing(
    postgres_target: tuple[str, str, str],
) -> None:
    url, tagged, schema = postgres_target
    before = asyncio.all_tasks()
    backend = PostgresBackend(tagged, schema=schema)
    first_call = asyncio.ensure_future(OpenWorkflow(backend).list_runs())
    await asyncio.sleep(0)  # the call is connecting (and will migrate the fresh schema)
    await backend.stop()
    outcome = (await asyncio.gather(first_call, return_exceptions=True))[0]
    assert isinstance(outcome, BackendClosedError) or (
        not isinstance(outcome, BaseException) and outcome.data == []
    )
    await _assert_nothing_left(url, tagged, before)


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


async def test_sqlite_stop_leaves_no_thread_and_no_task(tmp_path: Path) -> None:
    before, threads_before = asyncio.all_tasks(), _threads()
    backend = SqliteBackend(str(tmp_path / "close.db"))
    try:
        await create_pending_run(backend)
        notifier = notifier_of(backend)
        assert notifier is not None
        await notifier.wait_for_work(0.2)  # a waiter starts the data_version watcher
        started = sorted(thread.name for thread in _threads() - threads_before)
        assert any("watch" in name for name in started), started
    finally:
        await backend.stop()
    assert sorted(thread.name for thread in _threads() - threads_before) == []
    assert _other_tasks(before) == []
