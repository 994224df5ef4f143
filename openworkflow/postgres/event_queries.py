"""PostgreSQL statements of run events (``step.set_event``), rendered once per schema.

The ``run_events`` table is this port's; the TypeScript original neither
reads nor writes it.
"""

from __future__ import annotations

from functools import cache

from openworkflow.postgres.schema import render
from openworkflow.postgres.sql_fragments import RUN_OWNED

# Fenced by ownership in the same statement: the row is written only while the
# run is running and owned by the worker; the latest set of a key wins.
SET_RUN_EVENT = f"""
WITH owned AS (
  SELECT 1 FROM {{schema}}."workflow_runs" WHERE {RUN_OWNED}
),
upserted AS (
  INSERT INTO {{schema}}."run_events" (
    "namespace_id", "workflow_run_id", "key", "value", "updated_at"
  )
  SELECT %(ns)s, %(run_id)s, %(key)s, %(value)s, NOW() FROM owned
  ON CONFLICT ("namespace_id", "workflow_run_id", "key")
    DO UPDATE SET "value" = EXCLUDED."value", "updated_at" = EXCLUDED."updated_at"
  RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM upserted)"""

GET_RUN_EVENT = """
SELECT "value", "updated_at" FROM {schema}."run_events"
WHERE "namespace_id" = %(ns)s AND "workflow_run_id" = %(run_id)s AND "key" = %(key)s"""

LIST_RUN_EVENTS = """
SELECT "key", "value", "updated_at" FROM {schema}."run_events"
WHERE "namespace_id" = %(ns)s AND "workflow_run_id" = %(run_id)s
ORDER BY "key\""""

_TEMPLATES = {
    "set_run_event": SET_RUN_EVENT,
    "get_run_event": GET_RUN_EVENT,
    "list_run_events": LIST_RUN_EVENTS,
}


class EventQueries:
    """The statements above rendered for one schema, ready to execute."""

    def __init__(self, schema: str) -> None:
        for name, template in _TEMPLATES.items():
            setattr(self, name, render(template, schema).encode())

    set_run_event: bytes
    get_run_event: bytes
    list_run_events: bytes


@cache
def event_queries(schema: str) -> EventQueries:
    """The event statements for ``schema`` (rendered once per schema)."""
    return EventQueries(schema)
