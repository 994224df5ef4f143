"""SQLite: pruning finished runs past their age."""

from __future__ import annotations

from openworkflow.sqlite.tags import SqliteTags


class SqliteRetention(SqliteTags):
    """Retention."""
