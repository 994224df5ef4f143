"""SQLite: forking a run from one of its steps."""

from __future__ import annotations

from openworkflow.sqlite.retention import SqliteRetention


class SqliteForks(SqliteRetention):
    """Forks."""
