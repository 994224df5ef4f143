"""PostgreSQL statements of forks (``ow.fork``), rendered once per schema.

The ``run_forks`` table is this port's; the TypeScript original neither
reads nor writes it.
"""

from __future__ import annotations

from functools import cache

from openworkflow.postgres.schema import render
from openworkflow.postgres.sql_fragments import NOTIFY_WORK

# One statement: the fork (a pending run due now, the source's workflow,
# version, priority and concurrency columns), the copies of the chosen
# attempts (new ids; names, kinds, outcomes and times kept, so the replay
# order is the source's) and the link. The copies reference the fork inserted
# by the same statement: foreign keys are checked at its end.
FORK_WORKFLOW_RUN = f"""
WITH source AS (
  SELECT * FROM {{schema}}."workflow_runs" WHERE "namespace_id" = %(ns)s AND "id" = %(source_id)s
),
fork AS (
  INSERT INTO {{schema}}."workflow_runs" (
    "namespace_id", "id", "workflow_name", "version", "status", "config", "context", "input",
    "attempts", "available_at", "created_at", "updated_at", "priority", "concurrency_key",
    "concurrency_limit"
  )
  SELECT "namespace_id", %(run_id)s, "workflow_name", "version", 'pending', "config",
    "context", CASE WHEN %(replace_input)s THEN %(input)s ELSE "input" END, 0, NOW(),
    date_trunc('milliseconds', NOW()), NOW(), "priority", "concurrency_key", "concurrency_limit"
  FROM source
  RETURNING "id"
),
copied AS (
  INSERT INTO {{schema}}."step_attempts" (
    "namespace_id", "id", "workflow_run_id", "step_name", "kind", "status", "config", "context",
    "output", "error", "child_workflow_run_namespace_id", "child_workflow_run_id", "started_at",
    "finished_at", "created_at", "updated_at"
  )
  SELECT sa."namespace_id", pair."new_id", fork."id", sa."step_name", sa."kind", sa."status",
    sa."config", sa."context", sa."output", sa."error", sa."child_workflow_run_namespace_id",
    sa."child_workflow_run_id", sa."started_at", sa."finished_at", sa."created_at", sa."updated_at"
  FROM fork
  JOIN unnest(%(old_ids)b::text[], %(new_ids)b::text[]) AS pair("old_id", "new_id") ON TRUE
  JOIN {{schema}}."step_attempts" sa
    ON sa."namespace_id" = %(ns)s AND sa."workflow_run_id" = %(source_id)s
    AND sa."id" = pair."old_id"
  RETURNING 1
),
linked AS (
  INSERT INTO {{schema}}."run_forks" (
    "namespace_id", "workflow_run_id", "forked_from_id", "from_step", "created_at"
  )
  SELECT %(ns)s, fork."id", %(source_id)s, %(from_step)s, NOW() FROM fork
  RETURNING 1
)
SELECT fork."id", (SELECT COUNT(*) FROM copied), {NOTIFY_WORK} FROM fork"""

GET_RUN_FORK = """
SELECT "workflow_run_id", "forked_from_id", "from_step", "created_at"
FROM {schema}."run_forks"
WHERE "namespace_id" = %(ns)s AND "workflow_run_id" = %(run_id)s"""

LIST_RUN_FORKS = """
SELECT "workflow_run_id", "forked_from_id", "from_step", "created_at"
FROM {schema}."run_forks"
WHERE "namespace_id" = %(ns)s AND "forked_from_id" = %(run_id)s
ORDER BY "created_at", "workflow_run_id\""""

_TEMPLATES = {
    "fork_workflow_run": FORK_WORKFLOW_RUN,
    "get_run_fork": GET_RUN_FORK,
    "list_run_forks": LIST_RUN_FORKS,
}


class ForkQueries:
    """The statements above rendered for one schema, ready to execute."""

    def __init__(self, schema: str) -> None:
        for name, template in _TEMPLATES.items():
            setattr(self, name, render(template, schema).encode())

    fork_workflow_run: bytes
    get_run_fork: bytes
    list_run_forks: bytes


@cache
def fork_queries(schema: str) -> ForkQueries:
    """The fork statements for ``schema`` (rendered once per schema)."""
    return ForkQueries(schema)
