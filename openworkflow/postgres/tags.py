"""PostgreSQL: tags of runs."""

from __future__ import annotations

from openworkflow.postgres.streams import PostgresStreams


class PostgresTags(PostgresStreams):
    """Run tags."""
