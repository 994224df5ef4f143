"""PostgreSQL: pruning finished runs past their age.

A batch is one short ``READ COMMITTED`` transaction: a transaction-scoped
advisory lock per (schema, namespace) makes pruners take turns, then one
statement picks up to ``limit`` prunable runs and deletes them with their
step attempts (by cascade), signals, messages, events, streams, tags
and fork record.
"""

from __future__ import annotations

from typing import Any

from openworkflow.core.retention import PruneWorkflowRunsParams, stored_statuses
from openworkflow.postgres.retention_queries import (
    OPTIONAL_TABLES,
    RetentionQueries,
    retention_queries,
)
from openworkflow.postgres.tags import PostgresTags


class PostgresRetention(PostgresTags):
    """Retention: batches of finished runs deleted with everything that belongs to them."""

    @property
    def _rq(self) -> RetentionQueries:
        return retention_queries(self._db.schema)

    def _prune_values(self, params: PruneWorkflowRunsParams) -> dict[str, Any]:
        return self._params(
            statuses=list(stored_statuses(params.status)),
            before=params.finished_before,
            workflow=params.workflow_name,
            limit=params.limit,
        )

    async def prune_workflow_runs(self, params: PruneWorkflowRunsParams) -> int:
        """Delete up to ``limit`` prunable runs with their rows; the number deleted."""
        values = self._prune_values(params)
        values["lock"] = f"openworkflow-prune:{self._db.schema}:{self._namespace_id}"
        for name in OPTIONAL_TABLES:
            values[name] = f'"{self._db.schema}"."{name}"'
        async with self._connection() as connection, connection.transaction():
            locked = await self._one(connection, self._rq.lock_pruner, values)
            assert locked is not None  # a SELECT without FROM returns its one row
            present = tuple(
                name for name, found in zip(OPTIONAL_TABLES, locked[1:], strict=True) if found
            )
            query = self._rq.delete(params.workflow_name is not None, present)
            row = await self._one(connection, query, values)
        return int(row[0]) if row else 0

    async def count_prunable_workflow_runs(self, params: PruneWorkflowRunsParams) -> int:
        """How many runs :meth:`prune_workflow_runs` would delete, ignoring ``limit``."""
        query = self._rq.count[params.workflow_name is not None]
        row = await self._read_one(query, self._prune_values(params))
        return int(row[0]) if row else 0
