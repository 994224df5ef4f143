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

PYTHON_LEDGER = """
CREATE TABLE IF NOT EXISTS {schema}."openworkflow_python_migrations" (
  "version" BIGINT NOT NULL PRIMARY KEY,
  "name" TEXT NOT NULL,
  "applied_at" TIMESTAMPTZ NOT NULL DEFAULT pg_catalog.now()
);
"""
"""This port's own migration ledger, beside the original's ``openworkflow_migrations``.

This port's storage (new nullable columns, new tables, extra indexes) is
versioned here, so it never takes a version number a future upstream
migration will use; the TypeScript original never reads this table.
"""

_RECORD_PYTHON_MIGRATION = """
INSERT INTO {schema}."openworkflow_python_migrations" ("version", "name")
VALUES (%s, %s)
ON CONFLICT DO NOTHING"""


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
    # This port's migrations are idempotent statement by statement (IF NOT
    # EXISTS, ON CONFLICT DO NOTHING), so they need no transaction of their own.
    parts.append(
        "-- OpenWorkflow for Python's own migrations (ledger openworkflow_python_migrations)\n"
        f"{render(PYTHON_LEDGER, schema).strip()}\n"
    )
    for version, (name, script) in enumerate(python_migration_scripts(schema)):
        record = (
            sql.SQL(render(_RECORD_PYTHON_MIGRATION, schema).replace("%s", "{}"))
            .format(sql.Literal(version), sql.Literal(name))
            .as_string(None)
        )
        parts.append(
            f"-- python migration {version}: {name}\n{script.strip()}\n{record.strip()};\n"
        )
    return "\n".join(parts)


def python_migration_scripts(schema: str = DEFAULT_SCHEMA) -> list[tuple[str, str]]:
    """This port's migrations for ``schema`` as (name, SQL), in version order (index = version)."""
    folder = resources.files("openworkflow.postgres").joinpath("python_migrations")
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [
        (
            name.removesuffix(".sql"),
            render(folder.joinpath(name).read_text(encoding="utf-8"), schema),
        )
        for name in names
    ]


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
    """Apply the migrations ``schema`` lacks, one transaction each; return the original's version.

    The original's migrations first, then this port's (its own ledger).
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
        await _apply_python_migrations(connection, schema)
        return version
    finally:
        await connection.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (lock_key,))


async def applied_python_migrations(connection: AsyncConnection, schema: str) -> set[int]:
    """The versions recorded in this port's ledger (empty when it does not exist yet)."""
    cursor = await connection.execute(
        "SELECT to_regclass(format('%%I.%%I', %s::text, 'openworkflow_python_migrations'))",
        (schema,),
    )
    row = await cursor.fetchone()
    if row is None or row[0] is None:
        return set()
    query = render('SELECT "version" FROM {schema}."openworkflow_python_migrations"', schema)
    cursor = await connection.execute(query.encode())
    return {int(found[0]) for found in await cursor.fetchall()}


async def _apply_python_migrations(connection: AsyncConnection, schema: str) -> None:
    # Look before creating anything: DDL takes locks (CREATE INDEX a SHARE lock
    # on the table even when the index exists) that would stall writers each
    # time a worker starts.
    applied = await applied_python_migrations(connection, schema)
    scripts = python_migration_scripts(schema)
    if all(version in applied for version in range(len(scripts))):
        return
    await connection.execute(render(PYTHON_LEDGER, schema).encode())
    record = render(_RECORD_PYTHON_MIGRATION, schema).encode()
    for version, (name, script) in enumerate(scripts):
        if version in applied:
            continue
        async with connection.transaction():
            await connection.execute(script.encode())
            await connection.execute(record, (version, name))


async def drop_schema(connection: AsyncConnection, schema: str) -> None:
    """Drop ``schema`` and everything in it (for tests and teardown)."""
    await connection.execute(render("DROP SCHEMA IF EXISTS {schema} CASCADE", schema).encode())
