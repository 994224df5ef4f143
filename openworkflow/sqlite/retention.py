"""SQLite: pruning finished runs past their age.

A batch is one ``BEGIN IMMEDIATE`` transaction: SQLite has one writer at a
time (across processes too), so pruners take turns and each run is deleted
and counted once. It picks up to ``limit`` prunable runs and deletes them
with their step attempts (by cascade), signals, messages, events, streams,
tags and fork record.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from openworkflow.core import json as ow_json
from openworkflow.core.retention import PruneWorkflowRunsParams, stored_statuses
from openworkflow.sqlite import retention_queries as rq
from openworkflow.sqlite.base import iso
from openworkflow.sqlite.connection import transaction
from openworkflow.sqlite.tags import SqliteTags


class SqliteRetention(SqliteTags):
    """Retention: batches of finished runs deleted with everything that belongs to them."""

    def _prune_values(self, params: PruneWorkflowRunsParams) -> dict[str, Any]:
        stored = stored_statuses(params.status)
        values: dict[str, Any] = {
            "ns": self._namespace_id,
            # Two bound values, not a list: the status index is used for a plain IN.
            "status": stored[0],
            "legacy_status": stored[-1],
            "before": iso(params.finished_before),
            "limit": params.limit,
        }
        if params.workflow_name is not None:
            values["workflow"] = params.workflow_name
        return values

    async def prune_workflow_runs(self, params: PruneWorkflowRunsParams) -> int:
        """Delete up to ``limit`` prunable runs with their rows; the number deleted."""
        values = self._prune_values(params)
        select = rq.select_prunable(params.workflow_name is not None)

        def prune(c: sqlite3.Connection) -> int:
            ids = [row[0] for row in c.execute(select, values)]
            if not ids:
                return 0
            batch = {"ns": self._namespace_id, "run_ids": ow_json.dumps(ids)}
            for statement in rq.DELETE_RUN_ROWS:
                c.execute(statement, batch)
            for (table,) in c.execute(rq.EXISTING_TABLES).fetchall():
                c.execute(rq.delete_optional_rows(table), batch)
            return int(c.execute(rq.DELETE_RUNS, batch).rowcount)

        return await self._run(lambda c: transaction(c, lambda: prune(c)))

    async def count_prunable_workflow_runs(self, params: PruneWorkflowRunsParams) -> int:
        """How many runs :meth:`prune_workflow_runs` would delete, ignoring ``limit``."""
        values = self._prune_values(params)
        query = rq.count_prunable(params.workflow_name is not None)
        row = await self._run(lambda c: c.execute(query, values).fetchone())
        return int(row[0]) if row else 0
