"""SQLite statements of run events (``step.set_event``), bound by name.

The ``run_events`` table is this port's; the TypeScript original neither
reads nor writes it.
"""

from __future__ import annotations

from openworkflow.sqlite.queries import RUN_OWNED

# Fenced by ownership in the same statement: no row is written unless the run
# is running and owned by the worker; the latest set of a key wins.
SET_RUN_EVENT = f"""
INSERT INTO "run_events" ("namespace_id", "workflow_run_id", "key", "value", "updated_at")
SELECT :ns, :run_id, :key, :value, :now
WHERE EXISTS (SELECT 1 FROM "workflow_runs" WHERE {RUN_OWNED})
ON CONFLICT ("namespace_id", "workflow_run_id", "key")
  DO UPDATE SET "value" = excluded."value", "updated_at" = excluded."updated_at\""""

GET_RUN_EVENT = """
SELECT "value", "updated_at" FROM "run_events"
WHERE "namespace_id" = :ns AND "workflow_run_id" = :run_id AND "key" = :key"""

LIST_RUN_EVENTS = """
SELECT "key", "value", "updated_at" FROM "run_events"
WHERE "namespace_id" = :ns AND "workflow_run_id" = :run_id
ORDER BY "key\""""
