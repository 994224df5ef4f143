"""PostgreSQL: pruning finished runs past their age."""

from __future__ import annotations

from openworkflow.postgres.tags import PostgresTags


class PostgresRetention(PostgresTags):
    """Retention."""
