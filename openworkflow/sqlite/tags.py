"""SQLite: tags of runs (written with the run by :mod:`~openworkflow.sqlite.runs`).

A list filtered by tags walks the rarest tag's part of ``run_tags_filter_idx``
(each tag counted up to a cap first: SQLite keeps no per-value statistics) in
list order (each tag row holds its run's ``created_at``), looks each run up by
primary key and checks the other tags by primary key.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from openworkflow.backend_common import plan_page
from openworkflow.core.backend import ListWorkflowRunsParams
from openworkflow.core.cursor import Page
from openworkflow.core.tags import check_tags
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.sqlite import tag_queries as tq
from openworkflow.sqlite.base import Params, iso
from openworkflow.sqlite.base import to_run as _to_run
from openworkflow.sqlite.streams import SqliteStreams


class SqliteTags(SqliteStreams):
    """Run tags: read one run's, and list runs filtered by them."""

    async def get_run_tags(self, workflow_run_id: str) -> dict[str, str]:
        """The run's tags, by key (empty for an unknown run or one without tags)."""
        values = {"ns": self._namespace_id, "run_id": workflow_run_id}
        rows = await self._run(lambda c: c.execute(tq.SELECT_RUN_TAGS, values).fetchall())
        return {row[0]: row[1] for row in rows}

    async def list_workflow_runs(self, params: ListWorkflowRunsParams) -> Page[WorkflowRun]:
        """List runs newest first; with ``tags``, only the runs carrying every pair."""
        tags = check_tags(params.tags, "tags filter")
        if not tags:
            return await super().list_workflow_runs(params)
        plan = plan_page("DESC", params.limit, params.after, params.before)
        conditions: list[str] = []
        values: Params = {"ns": self._namespace_id}
        if params.status:
            conditions.append('wr."status" = :status')
            values["status"] = params.status
        if params.workflow_name:
            conditions.append('wr."workflow_name" = :workflow_name')
            values["workflow_name"] = params.workflow_name
        if plan.cursor is not None:
            values.update(cursor_created_at=iso(plan.cursor.created_at), cursor_id=plan.cursor.id)
        values["limit"] = plan.page_size + 1
        query = tq.tagged_page_query(len(tags), tuple(conditions), plan.order, plan.cursor_op)

        def read(c: sqlite3.Connection) -> list[Any]:
            ordered = tq.rarest_first(c, self._namespace_id, tags)
            return c.execute(query, {**values, **tq.tag_filter_values(ordered)}).fetchall()

        rows = await self._run(read)
        return plan.page([_to_run(row) for row in rows])
