"""F22: what the worker's claim costs on the backlog, from ``EXPLAIN ANALYZE``.

The statement is the one ``backlog_app``'s worker sends (routed to
``backlog-double``, no concurrency limit, one worker id per free slot), built
by the backend's own claim method and captured before it is sent
(:class:`benchmarks.claim_plan.StatementRecorder`); it runs under
``EXPLAIN ANALYZE`` a few times, each in a transaction rolled back, so the
backlog is left as it was.
"""

from __future__ import annotations

import psycopg

from benchmarks.claim_plan import StatementRecorder, routed, worker_ids
from benchmarks.claim_plan_keys import SESSION_OPTIONS, ServerCost, explain
from openworkflow.postgres import PostgresBackend


class _Recorder(StatementRecorder):
    """A :class:`StatementRecorder` of the backlog's namespace."""

    def __init__(self, url: str, schema: str, namespace: str) -> None:
        PostgresBackend.__init__(self, url, namespace, schema, run_migrations=False, listen=False)
        self.recorded = []


async def claim_cost(
    url: str, schema: str, namespace: str, workflow_name: str, slots: int, runs: int = 3
) -> ServerCost:
    """``EXPLAIN ANALYZE`` of the worker's claim for ``slots`` free slots, ``runs`` times."""
    recorder = _Recorder(url, schema, namespace)
    try:
        claim = routed([(workflow_name, None)], enforce=False)
        statement = await recorder.statement(claim(recorder, worker_ids(slots)))
    finally:
        await recorder.stop()
    with psycopg.connect(url, prepare_threshold=None, options=SESSION_OPTIONS) as connection:
        return ServerCost.of(explain(connection, statement.query, statement.params, runs))
