"""PostgreSQL statements of run streams (``step.stream``), rendered once per schema.

The ``run_streams`` table is this port's; the TypeScript original neither
reads nor writes it.
"""

from __future__ import annotations

from functools import cache

from openworkflow.postgres.schema import render
from openworkflow.postgres.sql_fragments import RUN_OWNED

# Fenced by ownership in the same statement: the item is written only while
# the run is running and owned by the worker; a stored position is kept (a
# replay appending it again changes nothing). Readers in other processes hear
# of a new item by NOTIFY ("s:<schema>:<run id>"), sent only when one was written.
APPEND_RUN_STREAM = f"""
WITH owned AS (
  SELECT 1 FROM {{schema}}."workflow_runs" WHERE {RUN_OWNED}
),
appended AS (
  INSERT INTO {{schema}}."run_streams" (
    "namespace_id", "workflow_run_id", "key", "seq", "value", "created_at"
  )
  SELECT %(ns)s, %(run_id)s, %(key)s, %(seq)s, %(value)s, NOW() FROM owned
  ON CONFLICT DO NOTHING
  RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM owned), EXISTS (SELECT 1 FROM appended),
  CASE WHEN EXISTS (SELECT 1 FROM appended)
    THEN pg_notify(%(channel)s, 's:' || %(schema_name)s || ':' || %(run_id)s) END"""

READ_RUN_STREAM = """
SELECT "seq", "value", "created_at" FROM {schema}."run_streams"
WHERE "namespace_id" = %(ns)s AND "workflow_run_id" = %(run_id)s AND "key" = %(key)s
  AND "seq" > %(after_seq)s
ORDER BY "seq"
LIMIT %(limit)s"""

RUN_STREAM_EXTENTS = """
SELECT "key", COUNT(*), MAX("seq"), MAX("created_at") FROM {schema}."run_streams"
WHERE "namespace_id" = %(ns)s AND "workflow_run_id" = %(run_id)s
  AND (%(key)s::text IS NULL OR "key" = %(key)s::text)
GROUP BY "key"
ORDER BY "key\""""

_TEMPLATES = {
    "append_run_stream": APPEND_RUN_STREAM,
    "read_run_stream": READ_RUN_STREAM,
    "run_stream_extents": RUN_STREAM_EXTENTS,
}


class StreamQueries:
    """The statements above rendered for one schema, ready to execute."""

    def __init__(self, schema: str) -> None:
        for name, template in _TEMPLATES.items():
            setattr(self, name, render(template, schema).encode())

    append_run_stream: bytes
    read_run_stream: bytes
    run_stream_extents: bytes


@cache
def stream_queries(schema: str) -> StreamQueries:
    """The stream statements for ``schema`` (rendered once per schema)."""
    return StreamQueries(schema)
