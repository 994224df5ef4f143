"""The database behind the settings: its kind, its migration SQL, and a connection check."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from openworkflow.cli import console, failure
from openworkflow.core.backend import Backend, MigratableBackend
from openworkflow.errors import OpenWorkflowError
from openworkflow.redaction import safe
from openworkflow.settings import EffectiveSettings

Kind = Literal["sqlite", "postgres", "other"]

_CHECK_TIMEOUT_S = 30.0


def backend_kind(settings: EffectiveSettings) -> Kind:
    """Which database the settings name, without connecting."""
    backend = settings.backend
    if isinstance(backend, str):
        if backend.startswith("sqlite:"):
            return "sqlite"
        if backend.startswith(("postgresql:", "postgres:")):
            return "postgres"
        return "other"
    from openworkflow.postgres import PostgresBackend
    from openworkflow.sqlite import SqliteBackend

    if isinstance(backend, SqliteBackend):
        return "sqlite"
    if isinstance(backend, PostgresBackend):
        return "postgres"
    return "other"


def postgres_schema(settings: EffectiveSettings) -> str:
    """The schema a PostgreSQL backend from these settings uses."""
    from openworkflow.postgres import PostgresBackend

    if isinstance(settings.backend, PostgresBackend):
        return settings.backend.schema
    return settings.schema


def migration_sql(settings: EffectiveSettings) -> str:
    """Every migration for the configured backend, as one printable script.

    Raises:
        CliError: the backend is neither SQLite nor PostgreSQL (exit code 2).
    """
    kind = backend_kind(settings)
    if kind == "postgres":
        from openworkflow.postgres import migration_script as postgres_migration_script

        return postgres_migration_script(postgres_schema(settings))
    if kind == "sqlite":
        from openworkflow.sqlite import migration_script as sqlite_migration_script

        return sqlite_migration_script()
    raise failure.usage_error(
        f"cannot print migrations for backend {console.describe_backend(settings.backend)}",
        hint="use a sqlite:/// or postgresql:// URL",
    )


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of opening the backend and running one query."""

    ok: bool
    migration_version: int | None = None
    error: str | None = None
    missing: str | None = None
    """The SQLite file that does not exist yet (nothing was checked nor created)."""


async def check(settings: EffectiveSettings, backend: Backend) -> Check:
    """Open the backend (running migrations), query it, and read its schema version."""
    try:
        await asyncio.wait_for(backend.count_workflow_runs(), _CHECK_TIMEOUT_S)
    except TimeoutError:
        return Check(ok=False, error=f"no answer within {_CHECK_TIMEOUT_S:.0f}s")
    except OpenWorkflowError as error:
        return Check(ok=False, error=safe(str(error)))
    try:
        version = await migration_version(backend)
    except Exception as error:
        return Check(ok=True, error=safe(f"could not read the schema version: {error}"))
    return Check(ok=True, migration_version=version)


async def migration_version(backend: Backend) -> int | None:
    """The applied migration version, or None when the backend cannot tell."""
    if isinstance(backend, MigratableBackend):
        return await backend.migration_version()
    return None
