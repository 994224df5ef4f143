"""A connection lost while the backend migrates its schema is retried, not misreported.

Found by the soak script: a worker starting while its connection was
terminated exited with "Grant this user CREATE on the database", a permission
hint for what was a dropped connection. The open now starts over with a fresh
connection (each migration commits whole under its lock), and a connection
lost on every try is reported as the server being unavailable.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from openworkflow.errors import BackendUnavailableError
from openworkflow.postgres import PostgresBackend
from openworkflow.postgres import connection as connection_module
from openworkflow.postgres.schema import drop_schema
from openworkflow.postgres.schema import migrate as real_migrate
from tests.fixtures.postgres import require_server_url


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = "ow_mig_" + uuid.uuid4().hex[:12]
    yield name
    url = require_server_url()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        await drop_schema(admin, name)


async def _terminate(connection: psycopg.AsyncConnection[Any]) -> None:
    """End ``connection``'s server process from another connection, as a restart would."""
    url = require_server_url()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (connection.info.backend_pid,))


async def test_a_connection_terminated_while_migrating_is_retried(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    async def migrate_after_a_cut(connection: psycopg.AsyncConnection[Any], name: str) -> None:
        calls.append(connection.info.backend_pid)
        if len(calls) == 1:
            await _terminate(connection)
        await real_migrate(connection, name)

    monkeypatch.setattr(connection_module, "MIGRATION_RETRY_DELAYS_S", (0.05, 0.05))
    monkeypatch.setattr(connection_module, "migrate", migrate_after_a_cut)
    backend = PostgresBackend(require_server_url(), "mig", schema=schema)
    try:
        await backend.count_workflow_runs()  # opens: connects and migrates
    finally:
        await backend.stop()
    assert len(calls) == 2 and calls[0] != calls[1], calls


async def test_a_connection_lost_on_every_try_says_the_server_is_unavailable(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def always_cut(connection: psycopg.AsyncConnection[Any], name: str) -> None:
        await _terminate(connection)
        await real_migrate(connection, name)

    monkeypatch.setattr(connection_module, "MIGRATION_RETRY_DELAYS_S", (0.05,))
    monkeypatch.setattr(connection_module, "migrate", always_cut)
    backend = PostgresBackend(require_server_url(), "mig", schema=schema)
    try:
        with pytest.raises(BackendUnavailableError) as raised:
            await backend.count_workflow_runs()
    finally:
        await backend.stop()
    message = str(raised.value)
    assert "lost its connection while migrating" in message and repr(schema) in message
    assert "Grant this user CREATE" not in message
