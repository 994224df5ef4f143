"""The PostgreSQL backend: the original's tables, ``FOR UPDATE SKIP LOCKED`` claims."""

from __future__ import annotations

from openworkflow.postgres.backend import PostgresBackend
from openworkflow.postgres.schema import (
    DEFAULT_SCHEMA,
    InvalidSchemaNameError,
    migration_script,
    migration_scripts,
)

__all__ = [
    "DEFAULT_SCHEMA",
    "InvalidSchemaNameError",
    "PostgresBackend",
    "migration_script",
    "migration_scripts",
]
