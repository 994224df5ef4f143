"""PostgreSQL-only behaviour: connecting, schemas, migrations, fencing, LISTEN/NOTIFY, reconnects.

Every test works in its own freshly named schema (dropped afterwards) on the
server named by ``OPENWORKFLOW_TEST_POSTGRES_URL``, with the real database
clock. Connections a test wants to find in ``pg_stat_activity`` (to kill
them, or to see them wait on a lock) carry a unique ``application_name``.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import psycopg
import pytest
from psycopg import sql

import openworkflow
from openworkflow.core import clock
from openworkflow.core.backend import (
    CancelWorkflowRunParams,
    CompleteStepAttemptParams,
    CompleteWorkflowRunParams,
    FailStepAttemptParams,
    GetStepAttemptParams,
    GetWorkflowRunParams,
    RescheduleWorkflowRunAfterFailedStepAttemptParams,
    SendSignalParams,
    SetStepAttemptChildWorkflowRunParams,
    SleepWorkflowRunParams,
)
from openworkflow.core.workflow_run import resolve_cancel_conflict
from openworkflow.errors import (
    BackendClosedError,
    BackendError,
    BackendUnavailableError,
    InvalidRunStateError,
    WorkflowRunNotFoundError,
    WriteConflictError,
)
from openworkflow.postgres import (
    InvalidSchemaNameError,
    PostgresBackend,
    migration_script,
    migration_scripts,
)
from openworkflow.postgres.schema import current_migration_version, drop_schema, migrate
from openworkflow.postgres.url import URL_EXAMPLE, InvalidDatabaseUrlError
from tests.backend.helpers import (
    claim,
    create_claimed_run,
    create_linked_child,
    create_pending_run,
    create_signal_wait,
    create_step,
    get_run,
    in_one_year,
    new_id,
    now,
    park,
)
from tests.fixtures.postgres import require_server_url
from tests.support.waiting import wait_until

LATEST_VERSION = 5
LONG_LEASE_MS = 60_000
PROMPT_SECONDS = 2.5
"""'Well under' the 5 s a notifier wait would otherwise take."""

Connection = psycopg.AsyncConnection[Any]
MakeBackend = Callable[..., PostgresBackend]


# -- fixtures and helpers -------------------------------------------------------------


def _new_schema_name() -> str:
    return "ow_t_" + uuid.uuid4().hex[:12]


def _url_with(url: str, **params: str) -> str:
    """``url`` with query parameters added (or replaced)."""
    parts = urlsplit(url)
    query = [(key, value) for key, value in parse_qsl(parts.query) if key not in params]
    query.extend(params.items())
    return parts._replace(query=urlencode(query, quote_via=quote)).geturl()


def _url_with_credentials(url: str, user: str, password: str, database: str | None = None) -> str:
    """The server URL with another user and (percent-encoded) password."""
    parts = urlsplit(url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    path = parts.path if database is None else "/" + database
    return parts._replace(netloc=netloc, path=path).geturl()


@pytest.fixture
def server() -> str:
    """The PostgreSQL server URL (skips locally, fails under CI, when unset)."""
    return require_server_url()


@pytest.fixture
async def admin(server: str) -> AsyncIterator[Connection]:
    """A raw autocommit connection for inspecting and tampering with rows."""
    async with await psycopg.AsyncConnection.connect(server, autocommit=True) as connection:
        yield connection


@pytest.fixture
async def schemas(server: str) -> AsyncIterator[Callable[..., str]]:
    """Hand out fresh schema names; every one handed out is dropped afterwards."""
    created: list[str] = []

    def new_schema(name: str | None = None) -> str:
        created.append(name or _new_schema_name())
        return created[-1]

    yield new_schema
    async with await psycopg.AsyncConnection.connect(server, autocommit=True) as connection:
        for name in created:
            await drop_schema(connection, name)


@pytest.fixture
def schema(schemas: Callable[..., str]) -> str:
    """One fresh (not yet existing) schema name."""
    return schemas()


@pytest.fixture
async def backends(server: str, schemas: Callable[..., str]) -> AsyncIterator[MakeBackend]:
    """Create PostgresBackends (each with its own pool) that are stopped afterwards."""
    opened: list[PostgresBackend] = []

    def make(
        schema: str,
        namespace_id: str | None = None,
        *,
        app: str | None = None,
        url: str | None = None,
        **options: Any,
    ) -> PostgresBackend:
        target = url or server
        if app is not None:
            target = _url_with(target, application_name=app)
        backend = PostgresBackend(
            target, namespace_id=namespace_id or new_id(), schema=schema, **options
        )
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        await backend.stop()


@pytest.fixture
async def pg(backends: MakeBackend, schema: str) -> PostgresBackend:
    """A migrated backend in a fresh schema and namespace."""
    backend = backends(schema)
    await backend.open()
    return backend


async def _rows(
    admin: Connection, query: str, *args: Any, schema: str | None = None
) -> list[tuple[Any, ...]]:
    """Run raw SQL; ``{schema}`` in ``query`` becomes the quoted schema name."""
    statement = sql.SQL(query).format(schema=sql.Identifier(schema)) if schema else query
    cursor = await admin.execute(statement, args)
    return await cursor.fetchall() if cursor.description else []


async def _set_run(
    admin: Connection, backend: PostgresBackend, run_id: str, **columns: Any
) -> None:
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder()) for name in columns
    )
    await admin.execute(
        sql.SQL('UPDATE {}."workflow_runs" SET {} WHERE "namespace_id" = %s AND "id" = %s').format(
            sql.Identifier(backend.schema), assignments
        ),
        [*columns.values(), backend.namespace_id, run_id],
    )


async def _versions(admin: Connection, schema: str) -> list[int]:
    rows = await _rows(
        admin,
        'SELECT "version" FROM {schema}."openworkflow_migrations" ORDER BY "version"',
        schema=schema,
    )
    return [int(row[0]) for row in rows]


async def _schema_exists(admin: Connection, schema: str) -> bool:
    rows = await _rows(admin, "SELECT 1 FROM pg_namespace WHERE nspname = %s", schema)
    return bool(rows)


async def _pids(admin: Connection, app: str, *, listening: bool | None = None) -> list[int]:
    """Server pids of the connections opened with ``application_name = app``."""
    query = (
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND pid <> pg_backend_pid()"
    )
    if listening is True:
        query += " AND query ILIKE 'LISTEN%%'"
    elif listening is False:
        query += " AND query NOT ILIKE 'LISTEN%%'"
    return [row[0] for row in await _rows(admin, query, app)]


async def _terminate(admin: Connection, pids: list[int]) -> None:
    await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))


def _messages(error: BaseException) -> str:
    """Every message of an error and the errors chained to it (what a traceback prints)."""
    seen: list[str] = []
    current: BaseException | None = error
    while current is not None and len(seen) < 20:
        seen += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return "\n".join(seen)


async def _timed(awaitable: Any) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await awaitable
    return loop.time() - started


# -- connecting -----------------------------------------------------------------------

INVALID_URLS = [
    "postgresql://u:secret@host:notaport/db",
    "postgresql://u:secret@host:99999/db",
    "mysql://u:secret@host:5432/db",
]


@pytest.mark.parametrize("url", INVALID_URLS)
def test_invalid_url_names_the_expected_form_and_hides_the_password(url: str) -> None:
    with pytest.raises(InvalidDatabaseUrlError) as caught:
        PostgresBackend(url)

    assert URL_EXAMPLE in str(caught.value)
    assert "secret" not in _messages(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("url", INVALID_URLS[:2])
def test_connect_with_an_invalid_url_hides_the_password(url: str) -> None:
    with pytest.raises(ValueError, match=re.escape(URL_EXAMPLE)) as caught:
        openworkflow.connect(url)

    assert "secret" not in _messages(caught.value)


async def test_refused_connection_is_unavailable_with_a_clear_message(schema: str) -> None:
    password = "hunter2"
    backend = PostgresBackend(f"postgresql://u:{password}@127.0.0.1:1/db", schema=schema)
    try:
        assert backend.url == "postgresql://u:***@127.0.0.1:1/db"

        with pytest.raises(BackendUnavailableError) as caught:
            await backend.open()
        message = str(caught.value)
        assert "failed to connect to postgresql://u:***@127.0.0.1:1/db" in message
        assert URL_EXAMPLE in message
        assert password not in _messages(caught.value)

        # Calls fail the same way (and may be retried): nothing was half-opened.
        with pytest.raises(BackendUnavailableError) as again:
            await create_pending_run(backend)
        assert password not in _messages(again.value)
    finally:
        await backend.stop()


@pytest.mark.parametrize("password", ["pw-7c1f0e2a9b", "p@ss:w/rd%20x"])
async def test_unknown_role_error_never_shows_the_password(
    server: str, schema: str, password: str
) -> None:
    role = "ow_no_such_role_" + uuid.uuid4().hex[:8]
    url = _url_with_credentials(server, role, password)
    backend = PostgresBackend(url, schema=schema)
    try:
        with pytest.raises(BackendUnavailableError) as caught:
            await backend.open()
    finally:
        await backend.stop()

    messages = _messages(caught.value)
    assert role in messages  # the server's reason is kept: role "..." does not exist
    assert password not in messages
    assert quote(password, safe="") not in messages
    assert password not in backend.url


async def test_unknown_database_error_never_shows_the_password(server: str, schema: str) -> None:
    database = "ow_no_such_db_" + uuid.uuid4().hex[:8]
    url = _url_with_credentials(
        server, urlsplit(server).username or "postgres", "pw-3d5e", database
    )
    backend = PostgresBackend(url, schema=schema)
    try:
        with pytest.raises(BackendUnavailableError, match="does not exist") as caught:
            await backend.open()
    finally:
        await backend.stop()
    assert "pw-3d5e" not in _messages(caught.value)


def test_max_pool_size_must_be_positive(server: str, schema: str) -> None:
    with pytest.raises(ValueError, match="max_pool_size"):
        PostgresBackend(server, schema=schema, max_pool_size=0)


async def test_stopped_backend_refuses_calls_and_closes_its_connections(
    backends: MakeBackend, schema: str, admin: Connection
) -> None:
    app = _new_schema_name()
    backend = backends(schema, app=app)
    await create_pending_run(backend)
    assert await _pids(admin, app)

    await backend.stop()
    await backend.stop()  # stopping twice is harmless

    with pytest.raises(BackendClosedError):
        await create_pending_run(backend)
    await wait_until(lambda: _no_pids(admin, app), interval=0.05)


async def _no_pids(admin: Connection, app: str) -> bool:
    return not await _pids(admin, app)


async def test_namespaces_share_the_pool_until_the_last_one_stops(
    backends: MakeBackend, schema: str, admin: Connection
) -> None:
    app = _new_schema_name()
    backend = backends(schema, app=app)
    other = backend.with_namespace("other-namespace")
    run = await create_pending_run(other)

    await other.stop()
    assert await _pids(admin, app)
    assert await backend.get_workflow_run(_get(run.id)) is None  # another namespace
    with pytest.raises(BackendClosedError):
        await create_pending_run(other)

    await backend.stop()
    await wait_until(lambda: _no_pids(admin, app), interval=0.05)


def _get(run_id: str) -> GetWorkflowRunParams:
    return GetWorkflowRunParams(workflow_run_id=run_id)


async def test_connect_opens_a_postgres_backend_in_the_url_schema(
    server: str, schema: str, admin: Connection
) -> None:
    backend = openworkflow.connect(_url_with(server, schema=schema), namespace_id="ns-url")
    try:
        assert isinstance(backend, PostgresBackend)
        assert backend.schema == schema
        assert backend.namespace_id == "ns-url"
        assert "schema=" not in backend.url  # not a libpq parameter: removed from the URL

        run = await create_pending_run(backend)
    finally:
        await backend.stop()

    rows = await _rows(
        admin,
        'SELECT "namespace_id" FROM {schema}."workflow_runs" WHERE "id" = %s',
        run.id,
        schema=schema,
    )
    assert rows == [("ns-url",)]


async def test_connect_reads_the_environment(
    server: str, schemas: Callable[..., str], admin: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_schema, url_schema, arg_schema = schemas(), schemas(), schemas()
    monkeypatch.setenv("OPENWORKFLOW_POSTGRES_URL", server)
    monkeypatch.setenv("OPENWORKFLOW_SCHEMA", env_schema)
    monkeypatch.setenv("OPENWORKFLOW_NAMESPACE_ID", "ns-from-env")

    from_env = openworkflow.connect()
    from_url = openworkflow.connect(_url_with(server, schema=url_schema))
    from_args = openworkflow.connect(
        _url_with(server, schema=url_schema), namespace_id="ns-arg", schema=arg_schema
    )
    try:
        assert isinstance(from_env, PostgresBackend)
        assert (from_env.schema, from_env.namespace_id) == (env_schema, "ns-from-env")
        assert isinstance(from_url, PostgresBackend)
        assert (from_url.schema, from_url.namespace_id) == (url_schema, "ns-from-env")
        assert isinstance(from_args, PostgresBackend)
        assert (from_args.schema, from_args.namespace_id) == (arg_schema, "ns-arg")

        run = await create_pending_run(from_env)
    finally:
        for backend in (from_env, from_url, from_args):
            await backend.stop()

    rows = await _rows(
        admin,
        'SELECT "namespace_id" FROM {schema}."workflow_runs" WHERE "id" = %s',
        run.id,
        schema=env_schema,
    )
    assert rows == [("ns-from-env",)]


# -- schema names and namespaces ------------------------------------------------------

INVALID_SCHEMA_NAMES = ["1abc", "a-b", 'x"; DROP TABLE y; --', "", "with space", "sch\u00e9ma"]


@pytest.mark.parametrize("name", INVALID_SCHEMA_NAMES)
def test_invalid_schema_names_are_rejected(server: str, name: str) -> None:
    with pytest.raises(InvalidSchemaNameError, match="Invalid schema name"):
        PostgresBackend(server, schema=name)
    with pytest.raises(InvalidSchemaNameError, match="Invalid schema name"):
        migration_scripts(name)


@pytest.mark.parametrize("name", [name for name in INVALID_SCHEMA_NAMES if name])
def test_connect_rejects_invalid_schema_names(server: str, name: str) -> None:
    with pytest.raises(InvalidSchemaNameError, match="Invalid schema name"):
        openworkflow.connect(server, schema=name)
    with pytest.raises(InvalidSchemaNameError, match="Invalid schema name"):
        openworkflow.connect(_url_with(server, schema=name))


def test_connect_rejects_an_explicitly_empty_schema(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An empty schema given on purpose must not silently become OPENWORKFLOW_SCHEMA or
    # the default "openworkflow" (the environment variable itself refuses "").
    monkeypatch.delenv("OPENWORKFLOW_SCHEMA", raising=False)
    with pytest.raises(InvalidSchemaNameError, match="Invalid schema name"):
        openworkflow.connect(server, schema="")
    with pytest.raises(InvalidSchemaNameError, match="Invalid schema name"):
        openworkflow.connect(_url_with(server, schema=""))


def test_a_64_byte_schema_name_is_rejected(server: str) -> None:
    with pytest.raises(InvalidSchemaNameError, match="at most 63 bytes"):
        PostgresBackend(server, schema="s" * 64)


async def test_a_63_byte_schema_name_is_accepted(
    backends: MakeBackend, schemas: Callable[..., str], admin: Connection
) -> None:
    name = schemas(_new_schema_name().ljust(63, "x"))
    assert len(name.encode()) == 63
    backend = backends(name)

    run = await create_pending_run(backend)

    assert await _schema_exists(admin, name)  # not truncated by the server
    assert (await get_run(backend, run.id)).id == run.id


HOSTILE_NAMESPACE = "x'; DROP TABLE workflow_runs; --\" \\ $$ ; ' OR '1'='1"


async def test_a_hostile_namespace_is_stored_verbatim_and_isolated(
    backends: MakeBackend, schema: str, admin: Connection
) -> None:
    hostile = backends(schema, HOSTILE_NAMESPACE)
    neighbour = hostile.with_namespace("default")

    run = await create_pending_run(hostile, idempotency_key=HOSTILE_NAMESPACE, input="'; --")
    again = await create_pending_run(
        hostile, workflow_name=run.workflow_name, idempotency_key=HOSTILE_NAMESPACE
    )
    try:
        assert again.id == run.id
        rows = await _rows(
            admin,
            'SELECT "namespace_id", "idempotency_key", "input" FROM {schema}."workflow_runs"',
            schema=schema,
        )
        assert rows == [(HOSTILE_NAMESPACE, HOSTILE_NAMESPACE, "'; --")]

        assert (await hostile.count_workflow_runs()).pending == 1
        assert (await neighbour.count_workflow_runs()).pending == 0
        assert await neighbour.get_workflow_run(_get(run.id)) is None
        assert await claim(neighbour) is None

        claimed = await claim(hostile, lease_ms=LONG_LEASE_MS)
        assert claimed is not None
        assert (claimed.id, claimed.namespace_id) == (run.id, HOSTILE_NAMESPACE)
        step = await create_step(hostile, claimed)
        assert step.namespace_id == HOSTILE_NAMESPACE
    finally:
        await neighbour.stop()


# -- migrations -----------------------------------------------------------------------


async def test_run_migrations_false_leaves_a_fresh_schema_alone(
    backends: MakeBackend, schema: str, admin: Connection
) -> None:
    backend = backends(schema, run_migrations=False)

    with pytest.raises(BackendError, match="does not exist") as caught:
        await create_pending_run(backend)

    assert not isinstance(caught.value, (BackendUnavailableError, WriteConflictError))
    assert not await _schema_exists(admin, schema)


async def test_run_migrations_false_uses_an_already_migrated_schema(
    backends: MakeBackend, pg: PostgresBackend
) -> None:
    unmigrating = backends(pg.schema, pg.namespace_id, run_migrations=False)
    run = await create_pending_run(pg)

    assert (await get_run(unmigrating, run.id)).id == run.id


async def test_open_records_versions_zero_to_latest_and_reopening_is_idempotent(
    backends: MakeBackend, pg: PostgresBackend, admin: Connection
) -> None:
    run = await create_pending_run(pg)
    assert await _versions(admin, pg.schema) == list(range(LATEST_VERSION + 1))

    reopened = backends(pg.schema, pg.namespace_id)
    await reopened.open()

    assert await _versions(admin, pg.schema) == list(range(LATEST_VERSION + 1))
    assert await current_migration_version(admin, pg.schema) == LATEST_VERSION
    assert await migrate(admin, pg.schema) == LATEST_VERSION
    assert await get_run(reopened, run.id) == run


async def test_current_version_of_a_missing_or_empty_schema_is_minus_one(
    schema: str, admin: Connection
) -> None:
    assert await current_migration_version(admin, schema) == -1

    await admin.execute(migration_scripts(schema)[0].encode())
    await admin.execute(
        sql.SQL('DELETE FROM {}."openworkflow_migrations"').format(sql.Identifier(schema))
    )
    assert await current_migration_version(admin, schema) == -1


def test_migration_scripts_are_rendered_for_the_schema() -> None:
    scripts = migration_scripts("custom_schema")

    assert len(scripts) == LATEST_VERSION + 1
    assert 'CREATE SCHEMA IF NOT EXISTS "custom_schema"' in scripts[0]
    for version, script in enumerate(scripts):
        assert "{schema}" not in script
        assert f"VALUES ({version})" in script
    assert '"custom_schema"."workflow_runs"' in scripts[1]
    assert '"custom_schema"."workflow_signals"' in scripts[5]
    assert '"openworkflow"."workflow_runs"' in migration_scripts()[1]


async def test_the_printable_migration_script_creates_a_usable_schema(
    backends: MakeBackend, schema: str, admin: Connection
) -> None:
    script = migration_script(schema)
    for version in range(LATEST_VERSION + 1):
        assert f"-- migration {version}\nBEGIN;" in script
    assert script.count("BEGIN;") == script.count("COMMIT;") == LATEST_VERSION + 1
    assert "{schema}" not in script

    await admin.execute(script.encode())

    assert await _versions(admin, schema) == list(range(LATEST_VERSION + 1))
    backend = backends(schema, run_migrations=False)
    assert (await create_pending_run(backend)).status == "pending"


async def test_open_applies_only_the_missing_migrations(
    backends: MakeBackend, schema: str, admin: Connection
) -> None:
    for script in migration_scripts(schema)[:3]:
        await admin.execute(script.encode())
    assert await _versions(admin, schema) == [0, 1, 2]

    backend = backends(schema)
    await backend.open()

    assert await _versions(admin, schema) == list(range(LATEST_VERSION + 1))
    unvalidated = await _rows(
        admin,
        "SELECT conname FROM pg_constraint WHERE connamespace = %s::regnamespace "
        "AND contype = 'f' AND NOT convalidated",
        schema,
    )
    assert unvalidated == []


async def test_concurrent_opens_on_an_empty_schema_all_succeed(
    backends: MakeBackend, schema: str, admin: Connection
) -> None:
    assert not await _schema_exists(admin, schema)
    opened = [backends(schema) for _ in range(5)]

    await asyncio.gather(*(backend.open() for backend in opened))

    assert await _versions(admin, schema) == list(range(LATEST_VERSION + 1))
    runs = await asyncio.gather(*(create_pending_run(backend) for backend in opened))
    assert len({run.id for run in runs}) == 5


TEXT, JSONB, INTEGER, BIGINT, TIMESTAMPTZ = (
    "text",
    "jsonb",
    "integer",
    "bigint",
    "timestamp with time zone",
)
# (column, type, nullable) in declaration order, as in the original's migrations.
EXPECTED_COLUMNS: dict[str, list[tuple[str, str, bool]]] = {
    "openworkflow_migrations": [("version", BIGINT, False)],
    "workflow_runs": [
        ("namespace_id", TEXT, False),
        ("id", TEXT, False),
        ("workflow_name", TEXT, False),
        ("version", TEXT, True),
        ("status", TEXT, False),
        ("idempotency_key", TEXT, True),
        ("config", JSONB, False),
        ("context", JSONB, True),
        ("input", JSONB, True),
        ("output", JSONB, True),
        ("error", JSONB, True),
        ("attempts", INTEGER, False),
        ("parent_step_attempt_namespace_id", TEXT, True),
        ("parent_step_attempt_id", TEXT, True),
        ("worker_id", TEXT, True),
        ("available_at", TIMESTAMPTZ, True),
        ("deadline_at", TIMESTAMPTZ, True),
        ("started_at", TIMESTAMPTZ, True),
        ("finished_at", TIMESTAMPTZ, True),
        ("created_at", TIMESTAMPTZ, False),
        ("updated_at", TIMESTAMPTZ, False),
        # This port's (its own ledger): nullable, so the original never notices it.
        ("priority", INTEGER, True),
        ("scheduled_at", TIMESTAMPTZ, True),
        ("concurrency_key", TEXT, True),
        ("concurrency_limit", INTEGER, True),
        ("start_granted_at", TIMESTAMPTZ, True),
        ("continued_as_id", TEXT, True),
    ],
    "step_attempts": [
        ("namespace_id", TEXT, False),
        ("id", TEXT, False),
        ("workflow_run_id", TEXT, False),
        ("step_name", TEXT, False),
        ("kind", TEXT, False),
        ("status", TEXT, False),
        ("config", JSONB, False),
        ("context", JSONB, True),
        ("output", JSONB, True),
        ("error", JSONB, True),
        ("child_workflow_run_namespace_id", TEXT, True),
        ("child_workflow_run_id", TEXT, True),
        ("started_at", TIMESTAMPTZ, True),
        ("finished_at", TIMESTAMPTZ, True),
        ("created_at", TIMESTAMPTZ, False),
        ("updated_at", TIMESTAMPTZ, False),
    ],
    "workflow_signals": [
        ("namespace_id", TEXT, False),
        ("id", TEXT, False),
        ("signal", TEXT, False),
        ("data", JSONB, True),
        ("sender_idempotency_key", TEXT, True),
        ("workflow_run_id", TEXT, False),
        ("step_attempt_id", TEXT, False),
        ("created_at", TIMESTAMPTZ, False),
    ],
    # This port's own tables.
    "openworkflow_python_migrations": [
        ("version", BIGINT, False),
        ("name", TEXT, False),
        ("applied_at", TIMESTAMPTZ, False),
    ],
    "paused_workflows": [
        ("namespace_id", TEXT, False),
        ("workflow_name", TEXT, False),
        ("paused_at", TIMESTAMPTZ, False),
    ],
    "worker_registrations": [
        ("namespace_id", TEXT, False),
        ("worker_id", TEXT, False),
        ("workflows", JSONB, False),
        ("heartbeat_at", TIMESTAMPTZ, False),
        ("expires_at", TIMESTAMPTZ, False),
    ],
    "schedules": [
        ("namespace_id", TEXT, False),
        ("name", TEXT, False),
        ("workflow_name", TEXT, False),
        ("version", TEXT, True),
        ("cron", TEXT, False),
        ("timezone", TEXT, False),
        ("input", JSONB, True),
        ("overlap", TEXT, False),
        ("catchup", TEXT, False),
        ("first_seen_at", TIMESTAMPTZ, False),
        ("last_tick_at", TIMESTAMPTZ, True),
        ("last_run_id", TEXT, True),
        ("paused_at", TIMESTAMPTZ, True),
        ("updated_at", TIMESTAMPTZ, False),
    ],
    "rate_limit_tokens": [
        ("namespace_id", TEXT, False),
        ("bucket", TEXT, False),
        ("rate_key", TEXT, False),
        ("token", INTEGER, False),
        ("granted_at", TIMESTAMPTZ, True),
        ("run_id", TEXT, True),
    ],
    "concurrency_keys": [
        ("namespace_id", TEXT, False),
        ("workflow_name", TEXT, False),
        ("concurrency_key", TEXT, False),
        ("holder_ids", "ARRAY", False),
        ("holder_attempts", "ARRAY", False),
        ("updated_at", TIMESTAMPTZ, False),
    ],
    "run_messages": [
        ("namespace_id", TEXT, False),
        ("id", TEXT, False),
        ("workflow_run_id", TEXT, False),
        ("signal", TEXT, False),
        ("data", JSONB, True),
        ("idempotency_key", TEXT, True),
        ("created_at", TIMESTAMPTZ, False),
        ("consumed_by_step_attempt_id", TEXT, True),
        ("consumed_at", TIMESTAMPTZ, True),
    ],
    "run_events": [
        ("namespace_id", TEXT, False),
        ("workflow_run_id", TEXT, False),
        ("key", TEXT, False),
        ("value", JSONB, True),
        ("updated_at", TIMESTAMPTZ, False),
    ],
    "run_streams": [
        ("namespace_id", TEXT, False),
        ("workflow_run_id", TEXT, False),
        ("key", TEXT, False),
        ("seq", BIGINT, False),
        ("value", JSONB, True),
        ("created_at", TIMESTAMPTZ, False),
    ],
    "run_tags": [
        ("namespace_id", TEXT, False),
        ("workflow_run_id", TEXT, False),
        ("key", TEXT, False),
        ("value", TEXT, False),
        ("created_at", TIMESTAMPTZ, False),
    ],
    "run_forks": [
        ("namespace_id", TEXT, False),
        ("workflow_run_id", TEXT, False),
        ("forked_from_id", TEXT, False),
        ("from_step", TEXT, False),
        ("created_at", TIMESTAMPTZ, False),
    ],
}
# name -> (table, columns of the key, referenced table, referenced columns, ON DELETE)
EXPECTED_FOREIGN_KEYS = {
    "step_attempts_workflow_run_fk": (
        "step_attempts",
        ["namespace_id", "workflow_run_id"],
        "workflow_runs",
        ["namespace_id", "id"],
        "c",
    ),
    "workflow_runs_parent_step_attempt_fk": (
        "workflow_runs",
        ["parent_step_attempt_namespace_id", "parent_step_attempt_id"],
        "step_attempts",
        ["namespace_id", "id"],
        "n",
    ),
    "step_attempts_child_workflow_run_fk": (
        "step_attempts",
        ["child_workflow_run_namespace_id", "child_workflow_run_id"],
        "workflow_runs",
        ["namespace_id", "id"],
        "n",
    ),
}
# name -> (table, indexed expression list as pg_get_indexdef prints it, partial predicate)
EXPECTED_INDEXES = {
    "workflow_runs_status_available_at_created_at_idx": (
        "workflow_runs",
        "namespace_id, status, available_at, created_at",
        None,
    ),
    "workflow_runs_workflow_name_idempotency_key_created_at_idx": (
        "workflow_runs",
        "namespace_id, workflow_name, idempotency_key, created_at",
        None,
    ),
    "workflow_runs_parent_step_idx": (
        "workflow_runs",
        "parent_step_attempt_namespace_id, parent_step_attempt_id",
        "parent_step_attempt_namespace_id IS NOT NULL",
    ),
    "workflow_runs_created_at_desc_idx": ("workflow_runs", "namespace_id, created_at DESC", None),
    "workflow_runs_status_created_at_desc_idx": (
        "workflow_runs",
        "namespace_id, status, created_at DESC",
        None,
    ),
    "workflow_runs_workflow_name_status_created_at_desc_idx": (
        "workflow_runs",
        "namespace_id, workflow_name, status, created_at DESC",
        None,
    ),
    "step_attempts_workflow_run_created_at_idx": (
        "step_attempts",
        "namespace_id, workflow_run_id, created_at",
        None,
    ),
    "step_attempts_workflow_run_step_name_created_at_idx": (
        "step_attempts",
        "namespace_id, workflow_run_id, step_name, created_at",
        None,
    ),
    "step_attempts_child_workflow_run_idx": (
        "step_attempts",
        "child_workflow_run_namespace_id, child_workflow_run_id",
        "child_workflow_run_namespace_id IS NOT NULL",
    ),
    "workflow_signals_step_attempt_idx": (
        "workflow_signals",
        "namespace_id, step_attempt_id",
        None,
    ),
    "workflow_signals_idempotency_idx": (
        "workflow_signals",
        "namespace_id, signal, sender_idempotency_key",
        "sender_idempotency_key IS NOT NULL",
    ),
    "step_attempts_signal_wait_idx": (
        "step_attempts",
        "namespace_id, ((context ->> 'signal'::text))",
        "kind = 'signal-wait'::text",
    ),
}

# Added by this port's own migrations (ledger openworkflow_python_migrations).
EXTRA_INDEXES = {
    "workflow_runs_active_deadline_at_idx": (
        "workflow_runs",
        "namespace_id, deadline_at",
        "deadline_at IS NOT NULL",
    ),
    "workflow_runs_pending_priority_idx": (
        "workflow_runs",
        "namespace_id, COALESCE(priority, 0) DESC, available_at, created_at",
        "status = 'pending'::text",
    ),
    "workflow_runs_pending_route_idx": (
        "workflow_runs",
        "namespace_id, workflow_name, COALESCE(version, ''::text), COALESCE(priority, 0) DESC, "
        "available_at, created_at",
        "status = 'pending'::text",
    ),
    "rate_limit_tokens_granted_at_idx": (
        "rate_limit_tokens",
        "namespace_id, bucket, rate_key, granted_at",
        None,
    ),
    "workflow_runs_pending_concurrency_idx": (
        "workflow_runs",
        "namespace_id, workflow_name, concurrency_key, COALESCE(priority, 0) DESC, available_at, "
        "created_at",
        "(status = 'pending'::text) AND (concurrency_key IS NOT NULL)",
    ),
    "run_messages_unconsumed_idx": (
        "run_messages",
        "namespace_id, workflow_run_id, signal, created_at, id",
        "consumed_by_step_attempt_id IS NULL",
    ),
    "run_messages_consumed_by_idx": (
        "run_messages",
        "namespace_id, consumed_by_step_attempt_id",
        "consumed_by_step_attempt_id IS NOT NULL",
    ),
    "run_messages_idempotency_key_idx": (
        "run_messages",
        "namespace_id, workflow_run_id, signal, idempotency_key",
        "idempotency_key IS NOT NULL",
    ),
    "run_tags_filter_idx": (
        "run_tags",
        "namespace_id, key, value, created_at, workflow_run_id",
        None,
    ),
    "run_forks_source_idx": ("run_forks", "namespace_id, forked_from_id", None),
}
# Unique secondary indexes: one delivery per wait, one message per (run, name, key).
UNIQUE_INDEXES = {"workflow_signals_step_attempt_idx", "run_messages_idempotency_key_idx"}


async def test_tables_and_columns_match_the_original(
    pg: PostgresBackend, admin: Connection
) -> None:
    rows = await _rows(
        admin,
        "SELECT table_name, column_name, data_type, is_nullable = 'YES' "
        "FROM information_schema.columns WHERE table_schema = %s "
        "ORDER BY table_name, ordinal_position",
        pg.schema,
    )
    actual: dict[str, list[tuple[str, str, bool]]] = {}
    for table, column, data_type, nullable in rows:
        actual.setdefault(table, []).append((column, data_type, nullable))

    assert actual == EXPECTED_COLUMNS
    default = await _rows(
        admin,
        "SELECT column_default FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name = 'workflow_signals' AND column_name = 'created_at'",
        pg.schema,
    )
    assert default == [("now()",)]


async def test_constraints_match_the_original(pg: PostgresBackend, admin: Connection) -> None:
    rows = await _rows(
        admin,
        """
        SELECT c.conname, c.contype, t.relname, c.convalidated, c.confdeltype,
               ref.relname,
               ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n
                     ORDER BY k.i),
               ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                     JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n
                     ORDER BY k.i)
        FROM pg_constraint c
        JOIN pg_class t ON t.oid = c.conrelid
        LEFT JOIN pg_class ref ON ref.oid = c.confrelid
        WHERE c.connamespace = %s::regnamespace AND c.contype IN ('p', 'f', 'u')
        """,
        pg.schema,
    )
    primary_keys = {row[2]: (row[0], row[6]) for row in rows if row[1] == "p"}
    foreign_keys = {
        row[0]: (row[2], row[6], row[5], row[7], row[4]) for row in rows if row[1] == "f"
    }

    assert primary_keys == {
        "openworkflow_migrations": ("openworkflow_migrations_pkey", ["version"]),
        "workflow_runs": ("workflow_runs_pkey", ["namespace_id", "id"]),
        "step_attempts": ("step_attempts_pkey", ["namespace_id", "id"]),
        "workflow_signals": ("workflow_signals_pkey", ["namespace_id", "id"]),
        "openworkflow_python_migrations": ("openworkflow_python_migrations_pkey", ["version"]),
        "paused_workflows": ("paused_workflows_pkey", ["namespace_id", "workflow_name"]),
        "worker_registrations": ("worker_registrations_pkey", ["namespace_id", "worker_id"]),
        "schedules": ("schedules_pkey", ["namespace_id", "name"]),
        "rate_limit_tokens": (
            "rate_limit_tokens_pkey",
            ["namespace_id", "bucket", "rate_key", "token"],
        ),
        "concurrency_keys": (
            "concurrency_keys_pkey",
            ["namespace_id", "workflow_name", "concurrency_key"],
        ),
        "run_messages": ("run_messages_pkey", ["namespace_id", "id"]),
        "run_events": ("run_events_pkey", ["namespace_id", "workflow_run_id", "key"]),
        "run_streams": (
            "run_streams_pkey",
            ["namespace_id", "workflow_run_id", "key", "seq"],
        ),
        "run_tags": ("run_tags_pkey", ["namespace_id", "workflow_run_id", "key"]),
        "run_forks": ("run_forks_pkey", ["namespace_id", "workflow_run_id"]),
    }
    assert foreign_keys == {name: tuple(value) for name, value in EXPECTED_FOREIGN_KEYS.items()}
    assert all(row[3] for row in rows), "every constraint is validated (migration 3)"
    assert not [row for row in rows if row[1] == "u"], "no unique constraint on idempotency"


async def test_indexes_are_the_originals_plus_the_deadline_index(
    pg: PostgresBackend, admin: Connection
) -> None:
    rows = await _rows(
        admin,
        """
        SELECT i.relname, t.relname, x.indisunique, x.indisprimary,
               pg_get_indexdef(x.indexrelid), pg_get_expr(x.indpred, x.indrelid)
        FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class t ON t.oid = x.indrelid
        WHERE t.relnamespace = %s::regnamespace
        """,
        pg.schema,
    )
    secondary = {row[0]: row for row in rows if not row[3]}

    expected = {**EXPECTED_INDEXES, **EXTRA_INDEXES}
    assert set(secondary) == set(expected)
    for name, (table, columns, predicate) in expected.items():
        _, actual_table, unique, _, definition, actual_predicate = secondary[name]
        assert actual_table == table, name
        assert unique == (name in UNIQUE_INDEXES), name
        assert f"USING btree ({columns})" in definition, definition
        if predicate is None:
            assert actual_predicate is None, name
        else:
            assert predicate in actual_predicate, (name, actual_predicate)
    assert "status = 'running'::text" in secondary["step_attempts_signal_wait_idx"][5]


# -- lease-transfer fencing -----------------------------------------------------------


async def _complete(backend: PostgresBackend, run_id: str, step_id: str, worker: str) -> Any:
    return await backend.complete_step_attempt(
        CompleteStepAttemptParams(
            workflow_run_id=run_id, step_attempt_id=step_id, worker_id=worker, output={"x": 1}
        )
    )


async def _fail(backend: PostgresBackend, run_id: str, step_id: str, worker: str) -> Any:
    return await backend.fail_step_attempt(
        FailStepAttemptParams(
            workflow_run_id=run_id,
            step_attempt_id=step_id,
            worker_id=worker,
            error={"message": "stale"},
        )
    )


FENCED_STEP_WRITES = {
    "complete": ("mark step attempt completed", _complete),
    "fail": ("mark step attempt failed", _fail),
    "link-child": ("set step attempt child workflow run", None),
}


@pytest.mark.parametrize("operation", list(FENCED_STEP_WRITES))
async def test_a_stale_step_write_waits_for_a_lease_transfer_then_fails(
    backends: MakeBackend, schema: str, server: str, admin: Connection, operation: str
) -> None:
    app = _new_schema_name()
    backend = backends(schema, app=app)
    run = await create_claimed_run(backend, lease_ms=LONG_LEASE_MS)
    assert run.worker_id is not None
    worker_a = run.worker_id
    step = await create_step(backend, run, kind="workflow")
    child = await create_pending_run(
        backend,
        parent_step_attempt_namespace_id=step.namespace_id,
        parent_step_attempt_id=step.id,
    )
    message, write = FENCED_STEP_WRITES[operation]

    async def stale_write() -> Any:
        if write is not None:
            return await write(backend, run.id, step.id, worker_a)
        return await backend.set_step_attempt_child_workflow_run(
            SetStepAttemptChildWorkflowRunParams(
                workflow_run_id=run.id,
                step_attempt_id=step.id,
                worker_id=worker_a,
                child_workflow_run_namespace_id=child.namespace_id,
                child_workflow_run_id=child.id,
            )
        )

    async with await psycopg.AsyncConnection.connect(server) as transfer:
        await transfer.execute(
            sql.SQL(
                'UPDATE {}."workflow_runs" SET "worker_id" = %s, "updated_at" = NOW() '
                'WHERE "namespace_id" = %s AND "id" = %s'
            ).format(sql.Identifier(schema)),
            ("B", backend.namespace_id, run.id),
        )
        task = asyncio.create_task(stale_write())
        try:
            await wait_until(lambda: _waiting_on_a_lock(admin, app), interval=0.05)
            await asyncio.sleep(0.2)
            assert not task.done(), "the stale write must wait for the transfer"
            await transfer.commit()
        finally:
            if not task.done():
                await transfer.rollback()

        with pytest.raises(WriteConflictError, match=f"^Failed to {message}$"):
            await task

    untouched = await backend.get_step_attempt(GetStepAttemptParams(step_attempt_id=step.id))
    assert untouched is not None
    assert untouched.status == "running"
    assert (untouched.output, untouched.error, untouched.finished_at) == (None, None, None)
    assert untouched.child_workflow_run_namespace_id is None
    assert untouched.child_workflow_run_id is None
    assert untouched.updated_at == step.updated_at
    raw = await _rows(
        admin,
        'SELECT "output" IS NULL, "error" IS NULL FROM {schema}."step_attempts" WHERE "id" = %s',
        step.id,
        schema=schema,
    )
    assert raw == [(True, True)]
    assert (await get_run(backend, run.id)).worker_id == "B"


async def _waiting_on_a_lock(admin: Connection, app: str) -> bool:
    rows = await _rows(
        admin,
        "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
        app,
    )
    return bool(rows)


# -- custom schema, JSON, statuses ----------------------------------------------------


async def test_a_custom_schema_holds_the_data_and_rescheduling_works_there(
    pg: PostgresBackend, admin: Connection
) -> None:
    run = await create_claimed_run(pg, lease_ms=LONG_LEASE_MS, input={"n": 1})
    assert run.worker_id is not None
    stored = await _rows(
        admin,
        'SELECT "status", "worker_id" FROM {schema}."workflow_runs" WHERE "id" = %s',
        run.id,
        schema=pg.schema,
    )
    assert stored == [("running", run.worker_id)]
    in_default = await _rows(admin, "SELECT to_regclass('openworkflow.workflow_runs')::text")
    if in_default[0][0] is not None:
        others = await _rows(
            admin, 'SELECT COUNT(*) FROM "openworkflow"."workflow_runs" WHERE "id" = %s', run.id
        )
        assert others == [(0,)]

    retry_at = now() + timedelta(hours=1)
    rescheduled = await pg.reschedule_workflow_run_after_failed_step_attempt(
        RescheduleWorkflowRunAfterFailedStepAttemptParams(
            workflow_run_id=run.id,
            worker_id=run.worker_id,
            error={"message": "step failed"},
            available_at=retry_at,
        )
    )

    assert rescheduled.status == "pending"
    assert rescheduled.worker_id is None
    assert rescheduled.available_at == retry_at
    assert rescheduled.error == {"message": "step failed"}
    stored = await _rows(
        admin,
        'SELECT "status", "worker_id", "available_at", "error"->>\'message\', "started_at" '
        'FROM {schema}."workflow_runs" WHERE "id" = %s',
        run.id,
        schema=pg.schema,
    )
    assert stored == [("pending", None, retry_at, "step failed", None)]
    assert await claim(pg) is None


JSON_WITH_ODD_KEYS = {
    "UPPER_SNAKE": 1,
    "camelCase": 2,
    "snake_case": 3,
    "Mixed-Dash key": {"INNER_KEY": [{"deepKey_X": True, "__proto__": None}]},
}


async def test_json_keys_are_stored_verbatim(pg: PostgresBackend, admin: Connection) -> None:
    run = await create_claimed_run(pg, lease_ms=LONG_LEASE_MS, input=JSON_WITH_ODD_KEYS)
    assert run.worker_id is not None
    step = await create_step(pg, run)
    completed_step = await _complete_with(pg, run.id, step.id, run.worker_id, JSON_WITH_ODD_KEYS)
    completed = await pg.complete_workflow_run(
        CompleteWorkflowRunParams(
            workflow_run_id=run.id, worker_id=run.worker_id, output=JSON_WITH_ODD_KEYS
        )
    )

    assert completed_step.output == JSON_WITH_ODD_KEYS
    assert completed.output == JSON_WITH_ODD_KEYS
    assert (await get_run(pg, run.id)).input == JSON_WITH_ODD_KEYS
    rows = await _rows(
        admin,
        """SELECT "input"->>'UPPER_SNAKE', "input"->>'camelCase', "input"->>'snake_case',
                  "input"->'Mixed-Dash key'->'INNER_KEY'->0->>'deepKey_X',
                  "output"->>'UPPER_SNAKE',
                  ARRAY(SELECT jsonb_object_keys("input") ORDER BY 1)
           FROM {schema}."workflow_runs" WHERE "id" = %s""",
        run.id,
        schema=pg.schema,
    )
    assert rows == [("1", "2", "3", "true", "1", sorted(JSON_WITH_ODD_KEYS))]
    step_rows = await _rows(
        admin,
        'SELECT "output"->>\'UPPER_SNAKE\' FROM {schema}."step_attempts" WHERE "id" = %s',
        step.id,
        schema=pg.schema,
    )
    assert step_rows == [("1",)]


async def _complete_with(
    backend: PostgresBackend, run_id: str, step_id: str, worker: str, output: Any
) -> Any:
    return await backend.complete_step_attempt(
        CompleteStepAttemptParams(
            workflow_run_id=run_id, step_attempt_id=step_id, worker_id=worker, output=output
        )
    )


async def test_null_json_values_are_sql_null(pg: PostgresBackend, admin: Connection) -> None:
    run = await create_pending_run(pg)

    rows = await _rows(
        admin,
        'SELECT "input" IS NULL, "context" IS NULL, "output" IS NULL, "config" '
        'FROM {schema}."workflow_runs" WHERE "id" = %s',
        run.id,
        schema=pg.schema,
    )
    assert rows == [(True, True, True, {})]


async def test_cancel_of_a_non_standard_status_raises_the_generic_error(
    pg: PostgresBackend, admin: Connection
) -> None:
    run = await create_pending_run(pg)
    await _set_run(admin, pg, run.id, status="paused")
    paused = await get_run(pg, run.id)
    with pytest.raises(InvalidRunStateError, match=r"^Failed to cancel workflow run$"):
        resolve_cancel_conflict(run.id, paused)  # what the backend is expected to raise

    with pytest.raises(InvalidRunStateError, match=r"^Failed to cancel workflow run$"):
        await pg.cancel_workflow_run(CancelWorkflowRunParams(workflow_run_id=run.id))

    assert (await get_run(pg, run.id)).status == "paused"


async def test_cancel_of_a_legacy_succeeded_or_missing_run(
    pg: PostgresBackend, admin: Connection
) -> None:
    run = await create_pending_run(pg)
    await _set_run(admin, pg, run.id, status="succeeded")

    with pytest.raises(
        InvalidRunStateError,
        match=re.escape(f"Cannot cancel workflow run {run.id} with status succeeded"),
    ):
        await pg.cancel_workflow_run(CancelWorkflowRunParams(workflow_run_id=run.id))
    missing = new_id()
    with pytest.raises(WorkflowRunNotFoundError, match=f"Workflow run {missing} does not exist"):
        await pg.cancel_workflow_run(CancelWorkflowRunParams(workflow_run_id=missing))


async def test_counts_fold_legacy_statuses_and_ignore_unknown_ones(
    pg: PostgresBackend, admin: Connection
) -> None:
    for status in ("sleeping", "succeeded", "paused", "running", "pending"):
        run = await create_pending_run(pg, available_at=now() + timedelta(days=1))
        await _set_run(admin, pg, run.id, status=status)

    counts = await pg.count_workflow_runs()

    assert (counts.pending, counts.running, counts.completed, counts.failed, counts.canceled) == (
        1,
        2,
        1,
        0,
        0,
    )


async def test_legacy_sleeping_run_with_a_past_time_is_claimable(
    pg: PostgresBackend, admin: Connection
) -> None:
    run = await create_pending_run(pg)
    await _set_run(
        admin,
        pg,
        run.id,
        status="sleeping",
        worker_id=None,
        available_at=now() - timedelta(seconds=1),
    )

    worker_id = new_id()
    claimed = await claim(pg, worker_id, lease_ms=LONG_LEASE_MS)

    assert claimed is not None
    assert claimed.id == run.id
    assert claimed.status == "running"
    assert claimed.worker_id == worker_id
    assert claimed.attempts == 1


async def test_legacy_sleeping_run_with_a_future_time_waits_and_can_be_canceled(
    pg: PostgresBackend, admin: Connection
) -> None:
    run = await create_pending_run(pg)
    await _set_run(
        admin, pg, run.id, status="sleeping", worker_id=None, available_at=now() + timedelta(1)
    )

    assert await claim(pg) is None
    assert (await get_run(pg, run.id)).status == "sleeping"
    canceled = await pg.cancel_workflow_run(CancelWorkflowRunParams(workflow_run_id=run.id))
    assert canceled.status == "canceled"
    assert canceled.available_at is None


# -- wake reconciliation when parking -------------------------------------------------


async def _claim_and_complete_child(backend: PostgresBackend, child_id: str) -> None:
    claimed = await claim(backend, lease_ms=LONG_LEASE_MS)
    assert claimed is not None
    assert claimed.id == child_id
    assert claimed.worker_id is not None
    await backend.complete_workflow_run(
        CompleteWorkflowRunParams(
            workflow_run_id=child_id, worker_id=claimed.worker_id, output={"done": True}
        )
    )


async def test_parking_a_parent_whose_child_already_completed_makes_it_available_now(
    pg: PostgresBackend,
) -> None:
    parent = await create_claimed_run(pg, lease_ms=LONG_LEASE_MS)
    _, child = await create_linked_child(pg, parent)
    await _claim_and_complete_child(pg, child.id)
    # The child finished while the parent was still owned: nothing was woken yet.
    assert (await get_run(pg, parent.id)).worker_id == parent.worker_id

    parked = await park(pg, parent, in_one_year())

    assert parked.status == "running"
    assert parked.worker_id is None
    assert parked.available_at is not None
    assert parked.available_at <= now()
    reclaimed = await claim(pg, lease_ms=LONG_LEASE_MS)
    assert reclaimed is not None
    assert reclaimed.id == parent.id


async def test_parking_does_not_wake_when_the_workflow_step_already_failed(
    pg: PostgresBackend,
) -> None:
    parent = await create_claimed_run(pg, lease_ms=LONG_LEASE_MS)
    assert parent.worker_id is not None
    step, child = await create_linked_child(pg, parent)
    await _claim_and_complete_child(pg, child.id)
    await _fail(pg, parent.id, step.id, parent.worker_id)
    resume_at = in_one_year()

    parked = await park(pg, parent, resume_at)

    assert parked.available_at == resume_at
    assert await claim(pg) is None


async def test_parking_a_run_whose_signal_was_already_delivered_makes_it_available_now(
    pg: PostgresBackend,
) -> None:
    signal = f"sig-{new_id()}"
    run = await create_claimed_run(pg, lease_ms=LONG_LEASE_MS)
    await create_signal_wait(pg, run, signal)
    sent = await pg.send_signal(SendSignalParams(signal=signal, data={"v": 1}))
    assert sent.workflow_run_ids == [run.id]

    parked = await park(pg, run, in_one_year())

    assert parked.available_at is not None
    assert parked.available_at <= now()


async def test_parking_overwrites_a_stale_past_available_at(
    pg: PostgresBackend, admin: Connection
) -> None:
    run = await create_claimed_run(pg, lease_ms=LONG_LEASE_MS)
    past = now() - timedelta(seconds=1)
    await _set_run(admin, pg, run.id, available_at=past, updated_at=past)
    resume_at = now() + timedelta(days=7)

    parked = await park(pg, run, resume_at)

    assert parked.available_at == resume_at
    assert parked.worker_id is None
    stored = await _rows(
        admin,
        'SELECT "available_at" FROM {schema}."workflow_runs" WHERE "id" = %s',
        run.id,
        schema=pg.schema,
    )
    assert stored == [(resume_at,)]


# -- LISTEN/NOTIFY --------------------------------------------------------------------


async def test_a_run_created_by_another_backend_wakes_an_idle_listener(
    backends: MakeBackend, schema: str
) -> None:
    listener = backends(schema)
    await listener.open()
    writer = backends(schema, listen=False)
    await writer.open()

    waiter = asyncio.create_task(_timed(listener.notifier.wait_for_work(5)))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await create_pending_run(writer)

    assert await waiter < PROMPT_SECONDS


async def test_a_run_finished_by_another_backend_wakes_its_result_waiter(
    backends: MakeBackend, schema: str
) -> None:
    listener = backends(schema)
    await listener.open()
    writer = backends(schema, listen=False)
    run = await create_claimed_run(writer, lease_ms=LONG_LEASE_MS)
    assert run.worker_id is not None

    waiter = asyncio.create_task(_timed(listener.notifier.wait_for_run(run.id, 5)))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await writer.complete_workflow_run(
        CompleteWorkflowRunParams(workflow_run_id=run.id, worker_id=run.worker_id, output=1)
    )

    assert await waiter < PROMPT_SECONDS


async def test_notifications_from_another_schema_are_ignored(
    backends: MakeBackend, schemas: Callable[..., str]
) -> None:
    listener = backends(schemas())
    await listener.open()
    elsewhere = backends(schemas(), listen=False)
    await elsewhere.open()

    waiter = asyncio.create_task(_timed(listener.notifier.wait_for_work(0.6)))
    await asyncio.sleep(0.05)
    await create_pending_run(elsewhere)

    assert await waiter >= 0.5


async def test_an_idle_listener_leaves_the_event_loop_asleep(
    backends: MakeBackend, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # psycopg's notifies() woke the loop every 100 ms while it waited (a timer
    # each time): ten wake-ups a second for every idle worker, most of its CPU.
    listener = backends(schema)
    await listener.open()
    writer = backends(schema, listen=False)
    await writer.open()
    await asyncio.sleep(0.2)  # listening by now
    loop = asyncio.get_running_loop()
    timers: list[float] = []
    call_later = loop.call_later

    def counted(delay: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        timers.append(delay)
        return call_later(delay, callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_later", counted)
    await asyncio.sleep(1.0)  # one timer: this sleep's own
    assert len(timers) <= 2, timers
    # And it still hears of new work at once.
    waiter = asyncio.create_task(_timed(listener.notifier.wait_for_work(5)))
    await asyncio.sleep(0.05)
    await create_pending_run(writer)
    assert await waiter < PROMPT_SECONDS


async def test_the_listener_reconnects_after_its_connection_is_killed(
    backends: MakeBackend, schema: str, admin: Connection
) -> None:
    app = _new_schema_name()
    listener = backends(schema, app=app)
    await listener.open()
    writer = backends(schema, listen=False)
    await writer.open()
    [old_pid] = await _pids(admin, app, listening=True)

    await _terminate(admin, [old_pid])

    async def relistening() -> list[int]:
        return [pid for pid in await _pids(admin, app, listening=True) if pid != old_pid]

    await wait_until(relistening, interval=0.05)
    await listener.open()  # the LISTEN is in place again
    waiter = asyncio.create_task(_timed(listener.notifier.wait_for_work(5)))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await create_pending_run(writer)

    assert await waiter < PROMPT_SECONDS


# -- losing pooled connections ---------------------------------------------------------


async def _grow_pool(
    backend: PostgresBackend, server: str, admin: Connection, app: str, size: int
) -> None:
    """Make the pool hold ``size`` connections at once: calls blocked on a row lock."""
    run = await create_claimed_run(backend, lease_ms=LONG_LEASE_MS)
    assert run.worker_id is not None
    worker_id = run.worker_id
    async with await psycopg.AsyncConnection.connect(server) as locker:
        await locker.execute(
            sql.SQL('SELECT 1 FROM {}."workflow_runs" WHERE "id" = %s FOR UPDATE').format(
                sql.Identifier(backend.schema)
            ),
            (run.id,),
        )
        # Parking writes (main pool; lease renewals have their own): the first
        # parks the run once the lock is released, the others find it parked.
        calls = [
            asyncio.create_task(
                backend.sleep_workflow_run(
                    SleepWorkflowRunParams(
                        workflow_run_id=run.id,
                        worker_id=worker_id,
                        available_at=clock.now() + timedelta(days=1),
                    )
                )
            )
            for _ in range(size)
        ]

        async def all_blocked() -> bool:
            rows = await _rows(
                admin,
                "SELECT COUNT(*) FROM pg_stat_activity "
                "WHERE application_name = %s AND wait_event_type = 'Lock'",
                app,
            )
            return rows[0][0] == size

        try:
            await wait_until(all_blocked, interval=0.05)
        finally:
            await locker.rollback()
        await asyncio.gather(*calls, return_exceptions=True)


async def _call_after_connection_loss(backend: PostgresBackend, run_id: str) -> str:
    """The next call succeeds, or at worst fails as unavailable and the one after succeeds."""
    try:
        return (await get_run(backend, run_id)).id
    except BackendUnavailableError:
        return (await get_run(backend, run_id)).id


async def test_the_pool_replaces_connections_killed_by_the_server(
    backends: MakeBackend, schema: str, admin: Connection
) -> None:
    app = _new_schema_name()
    backend = backends(schema, app=app)
    run = await create_pending_run(backend)
    pooled = await _pids(admin, app, listening=False)
    assert pooled

    await _terminate(admin, await _pids(admin, app))  # the listener's connection too

    assert await _call_after_connection_loss(backend, run.id) == run.id
    assert not set(pooled) & set(await _pids(admin, app))
    assert (await create_pending_run(backend)).status == "pending"


async def test_the_pool_recovers_promptly_after_the_server_kills_all_its_connections(
    backends: MakeBackend, schema: str, server: str, admin: Connection
) -> None:
    app = _new_schema_name()
    backend = backends(schema, app=app)
    await _grow_pool(backend, server, admin, app, 5)
    run = await create_pending_run(backend)
    pooled = await _pids(admin, app, listening=False)
    assert len(pooled) >= 5

    # A database restart, a failover or a proxy dropping idle connections looks like this.
    await _terminate(admin, await _pids(admin, app))

    # Not one multi-second stall (and then a timeout) per dead connection.
    recovered = _call_after_connection_loss(backend, run.id)
    assert await asyncio.wait_for(recovered, PROMPT_SECONDS + 0.5) == run.id
    assert not set(pooled) & set(await _pids(admin, app))
