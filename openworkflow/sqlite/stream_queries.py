"""SQLite statements of run streams (``step.stream``), bound by name.

The ``run_streams`` table is this port's; the TypeScript original neither
reads nor writes it.
"""

from __future__ import annotations

from openworkflow.sqlite.queries import RUN_OWNED

# Fenced by ownership in the same statement: no item is written unless the run
# is running and owned by the worker; a stored position is kept (a replay
# appending it again changes nothing).
APPEND_RUN_STREAM = f"""
INSERT OR IGNORE INTO "run_streams" (
  "namespace_id", "workflow_run_id", "key", "seq", "value", "created_at"
)
SELECT :ns, :run_id, :key, :seq, :value, :now
WHERE EXISTS (SELECT 1 FROM "workflow_runs" WHERE {RUN_OWNED})"""

RUN_OWNED_EXISTS = f'SELECT EXISTS (SELECT 1 FROM "workflow_runs" WHERE {RUN_OWNED})'

READ_RUN_STREAM = """
SELECT "seq", "value", "created_at" FROM "run_streams"
WHERE "namespace_id" = :ns AND "workflow_run_id" = :run_id AND "key" = :key
  AND "seq" > :after_seq
ORDER BY "seq"
LIMIT :limit"""

RUN_STREAM_EXTENTS = """
SELECT "key", COUNT(*), MAX("seq"), MAX("created_at") FROM "run_streams"
WHERE "namespace_id" = :ns AND "workflow_run_id" = :run_id
  AND (:key IS NULL OR "key" = :key)
GROUP BY "key"
ORDER BY "key\""""
