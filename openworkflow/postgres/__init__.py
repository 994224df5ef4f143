"""The PostgreSQL backend: the original's tables, ``FOR UPDATE SKIP LOCKED`` claims.

Everything here (and with it psycopg) is loaded on first use, so SQLite users
and tools that only need a URL or a schema name never import the driver.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from openworkflow.core.database_url import DEFAULT_SCHEMA
from openworkflow.errors import InvalidSchemaNameError

if TYPE_CHECKING:
    from openworkflow.postgres.backend import PostgresBackend
    from openworkflow.postgres.schema import migration_script, migration_scripts

__all__ = [
    "DEFAULT_SCHEMA",
    "InvalidSchemaNameError",
    "PostgresBackend",
    "migration_script",
    "migration_scripts",
]

_LAZY = {
    "PostgresBackend": "openworkflow.postgres.backend",
    "migration_script": "openworkflow.postgres.schema",
    "migration_scripts": "openworkflow.postgres.schema",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
