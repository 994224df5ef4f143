"""The embedded SQLite backend (``SqliteBackend``)."""

from __future__ import annotations

from openworkflow.sqlite.backend import SqliteBackend, migration_scripts

__all__ = ["SqliteBackend", "migration_scripts"]
