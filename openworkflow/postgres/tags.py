"""PostgreSQL: tags of runs (written with the run by :mod:`~openworkflow.postgres.runs`).

A list filtered by tags walks the first tag's part of ``run_tags_filter_idx``
in list order (each tag row holds its run's ``created_at``), joins each run by
primary key and checks the other tags by primary key, so a page costs about
``limit`` index steps however many runs the namespace holds.
"""

from __future__ import annotations

from typing import Any

from openworkflow.backend_common import plan_page
from openworkflow.core.backend import ListWorkflowRunsParams
from openworkflow.core.cursor import Page
from openworkflow.core.tags import check_tags
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.postgres.base import to_run
from openworkflow.postgres.streams import PostgresStreams
from openworkflow.postgres.tag_queries import TagQueries, tag_filter_values, tag_queries


class PostgresTags(PostgresStreams):
    """Run tags: read one run's, and list runs filtered by them."""

    @property
    def _tq(self) -> TagQueries:
        return tag_queries(self._db.schema)

    async def get_run_tags(self, workflow_run_id: str) -> dict[str, str]:
        """The run's tags, by key (empty for an unknown run or one without tags)."""
        rows = await self._read_all(self._tq.select_run_tags, self._params(run_id=workflow_run_id))
        return {row[0]: row[1] for row in rows}

    async def list_workflow_runs(self, params: ListWorkflowRunsParams) -> Page[WorkflowRun]:
        """List runs newest first; with ``tags``, only the runs carrying every pair."""
        tags = check_tags(params.tags, "tags filter")
        if not tags:
            return await super().list_workflow_runs(params)
        plan = plan_page("DESC", params.limit, params.after, params.before)
        conditions: list[str] = []
        values: dict[str, Any] = self._params(**tag_filter_values(tags))
        if params.status:
            conditions.append('wr."status" = %(status)s')
            values["status"] = params.status
        if params.workflow_name:
            conditions.append('wr."workflow_name" = %(workflow_name)s')
            values["workflow_name"] = params.workflow_name
        if plan.cursor is not None:
            values.update(c_at=plan.cursor.created_at, c_id=plan.cursor.id)
        query = self._tq.tagged_page(len(tags), tuple(conditions), plan.order, plan.cursor_op)
        rows = await self._read_all(query, {**values, "limit": plan.page_size + 1})
        return plan.page([to_run(row) for row in rows])
