"""PostgreSQL: forking a run from one of its steps."""

from __future__ import annotations

from openworkflow.postgres.retention import PostgresRetention


class PostgresForks(PostgresRetention):
    """Forks."""
