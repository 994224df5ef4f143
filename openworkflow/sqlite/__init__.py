"""The embedded SQLite backend (``SqliteBackend``)."""

from __future__ import annotations

from openworkflow.sqlite.backend import SqliteBackend
from openworkflow.sqlite.schema import migration_script, migration_scripts

__all__ = ["SqliteBackend", "migration_script", "migration_scripts"]
