"""SQLite statements of forks (``ow.fork``), bound by name.

The ``run_forks`` table is this port's; the TypeScript original neither
reads nor writes it.
"""

from __future__ import annotations

# The fork: a pending run due now, the source's workflow, version, priority
# and concurrency columns; its input replaced when asked.
INSERT_FORK = """
INSERT INTO "workflow_runs" (
  "namespace_id", "id", "workflow_name", "version", "status", "config", "context", "input",
  "attempts", "available_at", "created_at", "updated_at", "priority", "concurrency_key",
  "concurrency_limit"
)
SELECT "namespace_id", :run_id, "workflow_name", "version", 'pending', "config", "context",
  CASE WHEN :replace_input THEN :input ELSE "input" END, 0, :now, :now, :now, "priority",
  "concurrency_key", "concurrency_limit"
FROM "workflow_runs" WHERE "namespace_id" = :ns AND "id" = :source_id"""

# One copied attempt: new id, the fork's run; names, kinds, outcomes and times
# kept, so the fork replays in the source's order.
COPY_STEP_ATTEMPT = """
INSERT INTO "step_attempts" (
  "namespace_id", "id", "workflow_run_id", "step_name", "kind", "status", "config", "context",
  "output", "error", "child_workflow_run_namespace_id", "child_workflow_run_id", "started_at",
  "finished_at", "created_at", "updated_at"
)
SELECT "namespace_id", :new_id, :run_id, "step_name", "kind", "status", "config", "context",
  "output", "error", "child_workflow_run_namespace_id", "child_workflow_run_id", "started_at",
  "finished_at", "created_at", "updated_at"
FROM "step_attempts"
WHERE "namespace_id" = :ns AND "workflow_run_id" = :source_id AND "id" = :old_id"""

INSERT_RUN_FORK = """
INSERT INTO "run_forks" (
  "namespace_id", "workflow_run_id", "forked_from_id", "from_step", "created_at"
)
VALUES (:ns, :run_id, :source_id, :from_step, :now)"""

GET_RUN_FORK = """
SELECT "workflow_run_id", "forked_from_id", "from_step", "created_at" FROM "run_forks"
WHERE "namespace_id" = :ns AND "workflow_run_id" = :run_id"""

LIST_RUN_FORKS = """
SELECT "workflow_run_id", "forked_from_id", "from_step", "created_at" FROM "run_forks"
WHERE "namespace_id" = :ns AND "forked_from_id" = :run_id
ORDER BY "created_at", "workflow_run_id\""""
