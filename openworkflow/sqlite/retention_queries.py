"""SQLite statements of retention (pruning finished runs).

The same rules and index paths as PostgreSQL's: candidates from the
``(namespace_id, status, created_at)`` index bounded by ``created_at``; a
run's rows by their ``(namespace_id, workflow_run_id)`` keys; signals and
consumed messages through the run's step attempt ids. Run ids are bound as
one JSON array (``json_each``).
"""

from __future__ import annotations

_TERMINAL = "('completed', 'succeeded', 'failed', 'canceled')"

_PRUNABLE = f"""
r."namespace_id" = :ns
  AND r."status" IN (:status, :legacy_status)
  AND r."created_at" < :before
  AND r."finished_at" < :before
  {{workflow}}
  AND NOT EXISTS (
    SELECT 1 FROM "step_attempts" ps
    JOIN "workflow_runs" p
      ON p."namespace_id" = ps."namespace_id" AND p."id" = ps."workflow_run_id"
    WHERE ps."namespace_id" = r."parent_step_attempt_namespace_id"
      AND ps."id" = r."parent_step_attempt_id"
      AND p."status" NOT IN {_TERMINAL}
  )
  AND NOT EXISTS (
    SELECT 1 FROM "step_attempts" s
    WHERE s."namespace_id" = r."namespace_id" AND s."workflow_run_id" = r."id"
      AND EXISTS (
        SELECT 1 FROM "workflow_runs" c
        WHERE c."parent_step_attempt_namespace_id" = s."namespace_id"
          AND c."parent_step_attempt_id" = s."id"
          AND c."status" NOT IN {_TERMINAL}
      )
  )"""

_WORKFLOW = 'AND r."workflow_name" = :workflow'


def _prunable(by_workflow: bool) -> str:
    return _PRUNABLE.format(workflow=_WORKFLOW if by_workflow else "")


def select_prunable(by_workflow: bool) -> str:
    """Up to ``:limit`` prunable run ids."""
    return f'SELECT r."id" FROM "workflow_runs" r WHERE {_prunable(by_workflow)} LIMIT :limit'


def count_prunable(by_workflow: bool) -> str:
    """How many runs are prunable."""
    return f'SELECT COUNT(*) FROM "workflow_runs" r WHERE {_prunable(by_workflow)}'


_RUN_IDS = "(SELECT value FROM json_each(:run_ids))"
_STEP_IDS = f"""(
  SELECT "id" FROM "step_attempts"
  WHERE "namespace_id" = :ns AND "workflow_run_id" IN {_RUN_IDS}
)"""

DELETE_RUN_ROWS = (
    f"""DELETE FROM "workflow_signals"
WHERE "namespace_id" = :ns AND "step_attempt_id" IN {_STEP_IDS}""",
    f"""DELETE FROM "run_messages"
WHERE "namespace_id" = :ns AND "workflow_run_id" IN {_RUN_IDS}
  AND "consumed_by_step_attempt_id" IS NULL""",
    f"""DELETE FROM "run_messages"
WHERE "namespace_id" = :ns AND "consumed_by_step_attempt_id" IN {_STEP_IDS}""",
    f"""DELETE FROM "run_events"
WHERE "namespace_id" = :ns AND "workflow_run_id" IN {_RUN_IDS}""",
    f"""DELETE FROM "run_streams"
WHERE "namespace_id" = :ns AND "workflow_run_id" IN {_RUN_IDS}""",
)
"""This port's rows of the runs, deleted before the runs themselves."""

OPTIONAL_TABLES = ("run_tags", "run_forks")
"""This port's tables of a run's rows that later migrations add (tags, forks):
deleted with the run where they exist, so pruning works at every schema version."""

EXISTING_TABLES = """
SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('run_tags', 'run_forks')"""


def delete_optional_rows(table: str) -> str:
    """Delete the runs' own rows of an optional table (a fork's row goes with the fork)."""
    return f"""DELETE FROM "{table}"
WHERE "namespace_id" = :ns AND "workflow_run_id" IN {_RUN_IDS}"""


# The step attempts go by ON DELETE CASCADE; runs and attempts linking to
# these runs keep going (their link is set to NULL).
DELETE_RUNS = f"""DELETE FROM "workflow_runs"
WHERE "namespace_id" = :ns AND "id" IN {_RUN_IDS}"""
