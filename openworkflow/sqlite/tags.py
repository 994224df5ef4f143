"""SQLite: tags of runs."""

from __future__ import annotations

from openworkflow.sqlite.streams import SqliteStreams


class SqliteTags(SqliteStreams):
    """Run tags."""
