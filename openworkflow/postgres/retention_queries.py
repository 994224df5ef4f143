"""PostgreSQL statements of retention (pruning finished runs), rendered once per schema.

Every statement reads only indexed paths: the candidates come from the
``(namespace_id, status, created_at)`` index (or its ``workflow_name``
sibling) bounded by ``created_at`` (a run that finished before the cutoff was
created before it), a run's rows from their ``(namespace_id, workflow_run_id)``
keys, signals and consumed messages through the run's step attempt ids.
"""

from __future__ import annotations

from functools import cache

from openworkflow.postgres.schema import render

# Finished runs never come back here: a run whose parent is active, or that
# has an active child, is not a candidate (see core.retention).
_TERMINAL = "('completed', 'succeeded', 'failed', 'canceled')"

_PRUNABLE = f"""
r."namespace_id" = %(ns)s
  AND r."status" = ANY(%(statuses)s)
  AND r."created_at" < %(before)s
  AND r."finished_at" < %(before)s
  {{workflow}}
  AND NOT EXISTS (
    SELECT 1 FROM {{{{schema}}}}."step_attempts" ps
    JOIN {{{{schema}}}}."workflow_runs" p
      ON p."namespace_id" = ps."namespace_id" AND p."id" = ps."workflow_run_id"
    WHERE ps."namespace_id" = r."parent_step_attempt_namespace_id"
      AND ps."id" = r."parent_step_attempt_id"
      AND p."status" NOT IN {_TERMINAL}
  )
  AND NOT EXISTS (
    SELECT 1 FROM {{{{schema}}}}."step_attempts" s
    WHERE s."namespace_id" = r."namespace_id" AND s."workflow_run_id" = r."id"
      AND EXISTS (
        SELECT 1 FROM {{{{schema}}}}."workflow_runs" c
        WHERE c."parent_step_attempt_namespace_id" = s."namespace_id"
          AND c."parent_step_attempt_id" = s."id"
          AND c."status" NOT IN {_TERMINAL}
      )
  )"""

_WORKFLOW = 'AND r."workflow_name" = %(workflow)s'

OPTIONAL_TABLES = ("run_tags", "run_forks")
"""This port's tables of a run's rows that later migrations add (tags, forks):
deleted with the run where they exist, so pruning works at every schema version."""

# One pruner at a time per (schema, namespace): later ones wait for the batch
# under way (a few hundred runs), so no run is deleted or counted twice, and
# two pruners never lock each other's cascades in opposite orders. The other
# columns say which of the optional tables exist.
LOCK_PRUNER = """
SELECT pg_advisory_xact_lock(hashtextextended(%(lock)s, 0::bigint)),
  to_regclass(%(run_tags)s) IS NOT NULL, to_regclass(%(run_forks)s) IS NOT NULL"""

# SKIP LOCKED: a run a worker holds right now (a retry, a cancel) is left for
# the next batch rather than waited for. FOR UPDATE rechecks the run's own
# conditions on the newest row version, so a run retried meanwhile is kept.
# The step attempts go by ON DELETE CASCADE; the runs they link to keep
# going (their link is set to NULL).
_DELETE = """
WITH doomed AS (
  SELECT r."id" FROM {{schema}}."workflow_runs" r
  WHERE {prunable}
  LIMIT %(limit)s
  FOR UPDATE OF r SKIP LOCKED
),
steps AS (
  SELECT s."id" FROM {{schema}}."step_attempts" s
  WHERE s."namespace_id" = %(ns)s AND s."workflow_run_id" IN (SELECT "id" FROM doomed)
),
signals AS (
  DELETE FROM {{schema}}."workflow_signals"
  WHERE "namespace_id" = %(ns)s AND "step_attempt_id" IN (SELECT "id" FROM steps)
),
unconsumed AS (
  DELETE FROM {{schema}}."run_messages"
  WHERE "namespace_id" = %(ns)s AND "workflow_run_id" IN (SELECT "id" FROM doomed)
    AND "consumed_by_step_attempt_id" IS NULL
),
consumed AS (
  DELETE FROM {{schema}}."run_messages"
  WHERE "namespace_id" = %(ns)s AND "consumed_by_step_attempt_id" IN (SELECT "id" FROM steps)
),
events AS (
  DELETE FROM {{schema}}."run_events"
  WHERE "namespace_id" = %(ns)s AND "workflow_run_id" IN (SELECT "id" FROM doomed)
),
streams AS (
  DELETE FROM {{schema}}."run_streams"
  WHERE "namespace_id" = %(ns)s AND "workflow_run_id" IN (SELECT "id" FROM doomed)
),{optional}
deleted AS (
  DELETE FROM {{schema}}."workflow_runs"
  WHERE "namespace_id" = %(ns)s AND "id" IN (SELECT "id" FROM doomed)
  RETURNING 1
)
SELECT COUNT(*) FROM deleted"""

# A run's own rows in an optional table (keyed by the run: a fork's row goes
# with the fork; a fork of a pruned run keeps its row, naming a run now gone).
_OPTIONAL = """
{name} AS (
  DELETE FROM {{schema}}."{name}"
  WHERE "namespace_id" = %(ns)s AND "workflow_run_id" IN (SELECT "id" FROM doomed)
),"""

_COUNT = """
SELECT COUNT(*) FROM {{schema}}."workflow_runs" r
WHERE {prunable}"""


def _prunable(by_workflow: bool) -> str:
    return _PRUNABLE.format(workflow=_WORKFLOW if by_workflow else "")


class RetentionQueries:
    """The statements above rendered for one schema, ready to execute.

    ``count[by_workflow]`` and :meth:`delete`: a statement per variant, so
    each gets the plan of its own index.
    """

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.lock_pruner = render(LOCK_PRUNER, schema).encode()
        self.count = {
            by_workflow: render(_COUNT.format(prunable=_prunable(by_workflow)), schema).encode()
            for by_workflow in (False, True)
        }

    def delete(self, by_workflow: bool, tables: tuple[str, ...]) -> bytes:
        """The batch delete, also clearing the optional ``tables`` (which exist)."""
        return _delete(self.schema, by_workflow, tables)


@cache
def _delete(schema: str, by_workflow: bool, tables: tuple[str, ...]) -> bytes:
    optional = "".join(_OPTIONAL.format(name=name) for name in tables)
    text = _DELETE.format(prunable=_prunable(by_workflow), optional=optional)
    return render(text, schema).encode()


@cache
def retention_queries(schema: str) -> RetentionQueries:
    """The retention statements for ``schema`` (rendered once per schema)."""
    return RetentionQueries(schema)
