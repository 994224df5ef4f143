"""The PostgreSQL schema: name validation, the original's migrations, and applying them.

Migration scripts are the TypeScript original's, version for version, kept as
``.sql`` templates with a ``{schema}`` placeholder that is filled with a
validated, quoted identifier (``psycopg.sql``). They are applied under a
session advisory lock so that many workers starting at once on an empty
database take turns instead of racing on ``CREATE SCHEMA``.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

from openworkflow.core.database_url import DEFAULT_SCHEMA
from openworkflow.errors import InvalidSchemaNameError

_SCHEMA_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_IDENTIFIER_BYTES = 63
_MIGRATION_LOCK_PREFIX = "openworkflow:migrate:"

AsyncConnection = psycopg.AsyncConnection[Any]

EXTRA_INDEXES = """
CREATE INDEX IF NOT EXISTS "workflow_runs_active_deadline_at_idx"
ON {schema}."workflow_runs" ("namespace_id", "deadline_at")
WHERE "deadline_at" IS NOT NULL AND "status" IN ('pending', 'running', 'sleeping');
"""
"""Indexes this port adds beyond the original's migrations, applied after them.

They are not recorded in ``openworkflow_migrations`` (a future upstream
migration must keep its version number), are created ``IF NOT EXISTS``, and
only speed queries up: the TypeScript original works unchanged beside them.
The deadline index lets every claim find runs past their deadline without
reading the whole backlog of active runs.
"""


def validate_schema_name(schema: object) -> str:
    """Return ``schema`` if it is a plain identifier of at most 63 bytes, else raise.

    Raises:
        InvalidSchemaNameError: the name has other characters or is too long.
    """
    if not isinstance(schema, str) or not _SCHEMA_PATTERN.fullmatch(schema):
        raise InvalidSchemaNameError(
            f"Invalid schema name {schema!r}. Use a Postgres identifier (letters, numbers, "
            "underscores; cannot start with a number)."
        )
    if len(schema.encode("utf-8")) > _MAX_IDENTIFIER_BYTES:
        raise InvalidSchemaNameError(
            f"Invalid schema name {schema!r}. Postgres identifiers must be at most "
            f"{_MAX_IDENTIFIER_BYTES} bytes."
        )
    return schema


def render(template: str, schema: str) -> str:
    """Fill ``{schema}`` in a SQL template with the quoted, validated schema name."""
    identifier = sql.Identifier(validate_schema_name(schema))
    return sql.SQL(template).format(schema=identifier).as_string(None)


def migration_scripts(schema: str = DEFAULT_SCHEMA) -> list[str]:
    """Return the migration SQL for ``schema`` in version order (index = version)."""
    folder = resources.files("openworkflow.postgres").joinpath("migrations")
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [render(folder.joinpath(name).read_text(encoding="utf-8"), schema) for name in names]


def migration_script(schema: str = DEFAULT_SCHEMA) -> str:
    """Every migration as one printable script, each in its own transaction."""
    parts = [
        f"-- migration {version}\nBEGIN;\n\n{script.strip()}\n\nCOMMIT;\n"
        for version, script in enumerate(migration_scripts(schema))
    ]
    parts.append(
        "-- indexes added by OpenWorkflow for Python (not versioned)\n"
        f"{render(EXTRA_INDEXES, schema).strip()}\n"
    )
    return "\n".join(parts)


async def current_migration_version(connection: AsyncConnection, schema: str) -> int:
    """Highest applied migration version, or -1 when the schema has none."""
    cursor = await connection.execute(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables "
        "WHERE table_schema = %s AND table_name = 'openworkflow_migrations')",
        (schema,),
    )
    row = await cursor.fetchone()
    if row is None or not row[0]:
        return -1
    query = render('SELECT MAX("version") FROM {schema}."openworkflow_migrations"', schema)
    cursor = await connection.execute(query.encode())
    row = await cursor.fetchone()
    return -1 if row is None or row[0] is None else int(row[0])


async def migrate(connection: AsyncConnection, schema: str) -> int:
    """Apply the migrations ``schema`` lacks, one transaction each; return the new version.

    ``connection`` must be in autocommit mode. A session advisory lock keyed
    on the schema serialises concurrent migrators; the lock is released on
    the way out even when a migration fails.
    """
    lock_key = _MIGRATION_LOCK_PREFIX + validate_schema_name(schema)
    await connection.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (lock_key,))
    try:
        version = await current_migration_version(connection, schema)
        for target, script in enumerate(migration_scripts(schema)):
            if target <= version:
                continue
            async with connection.transaction():
                await connection.execute(script.encode())
            version = target
        await _create_extra_indexes(connection, schema)
        return version
    finally:
        await connection.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (lock_key,))


async def _create_extra_indexes(connection: AsyncConnection, schema: str) -> None:
    # CREATE INDEX takes a SHARE lock on the table even when the index exists,
    # which would stall writers each time a worker starts: look first.
    cursor = await connection.execute(
        "SELECT to_regclass(format('%%I.%%I', %s::text, 'workflow_runs_active_deadline_at_idx'))",
        (schema,),
    )
    row = await cursor.fetchone()
    if row is None or row[0] is None:
        await connection.execute(render(EXTRA_INDEXES, schema).encode())


async def drop_schema(connection: AsyncConnection, schema: str) -> None:
    """Drop ``schema`` and everything in it (for tests and teardown)."""
    await connection.execute(render("DROP SCHEMA IF EXISTS {schema} CASCADE", schema).encode())
