"""F22's backlog: a million pending runs written in bulk, and what the test counts afterwards.

A million runs through the client would take many minutes, so
:func:`fill_backlog` copies one run the client created (the *template*) a
million times less one in a single ``INSERT ... SELECT generate_series``:
every column the engine writes for a new run (see ``INSERT_WORKFLOW_RUNS`` in
``openworkflow.postgres.create_queries``) comes from the template row, except
the ones that differ per run:

- ``id``: UUIDv7-shaped like ``openworkflow.core.ids.new_id`` (48 bits of
  milliseconds, version 7, variant ``10``; hashed bits in place of the
  counter and random ones), so the id indexes fill in the same order as the
  engine's;
- ``input``: the run's number ``n`` (1 .. N-1; the template is run N);
- ``created_at``, ``available_at``, ``updated_at``: one millisecond apart,
  ending just before the template's, as if the backlog had piled up over the
  last N milliseconds (``created_at`` truncated to milliseconds, as the
  engine writes it).

The other tables (tags, steps) get nothing, as for a new run without tags.
The secondary indexes are dropped around the insert and built again from their
own definitions (same names, same definitions: the end state is the engine's).
Statistics are then refreshed (``ANALYZE``), as autovacuum would do on a table
this size. Everything afterwards is counted in SQL (the statements at the end
of this module), so the test process never holds the backlog either.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg import sql

# The per-run columns come from i; the rest is the template's ("t"). The id is
# built as new_id builds it, as two 64-bit halves: 48 bits of milliseconds, the
# version (7), a 12-bit counter (i's low bits); then the variant (binary 10) and
# 62 bits of PostgreSQL's hashint8extended of i in place of random ones. Each
# run has a millisecond of its own, so the ids are unique whatever the hash.
# (md5 and string slicing made the statement several times slower.)
_FILL = """
WITH t AS (
  SELECT *, (extract(epoch FROM "created_at") * 1000)::bigint AS "created_ms" FROM {runs}
  WHERE "namespace_id" = %(ns)s AND "id" = %(template_id)s
)
INSERT INTO {runs} (
  "namespace_id", "id", "workflow_name", "version", "status", "idempotency_key",
  "config", "context", "input", "attempts", "parent_step_attempt_namespace_id",
  "parent_step_attempt_id", "available_at", "deadline_at", "created_at", "updated_at",
  "priority", "scheduled_at", "concurrency_key", "concurrency_limit"
)
SELECT t."namespace_id",
  (lpad(to_hex(((t."created_ms" - (%(count)s + 1 - i)) << 16) | 28672 | (i & 4095)), 16, '0')
    || to_hex((hashint8extended(i, 0) & 4611686018427387903) | (-9223372036854775807 - 1))
  )::uuid::text,
  t."workflow_name", t."version", t."status", t."idempotency_key",
  t."config", t."context", to_jsonb(i), t."attempts", t."parent_step_attempt_namespace_id",
  t."parent_step_attempt_id", at.ts, t."deadline_at", at.ts, at.ts,
  t."priority", t."scheduled_at", t."concurrency_key", t."concurrency_limit"
FROM t,
  generate_series(1::bigint, %(count)s::bigint) AS i,
  LATERAL (SELECT t."created_at" - (%(count)s + 1 - i) * interval '1 millisecond' AS ts) at
ORDER BY i
"""


@dataclass(frozen=True)
class Filled:
    """How the backlog was written: rows and seconds per phase."""

    rows: int
    insert_s: float
    index_s: float
    analyze_s: float


def fill_backlog(url: str, schema: str, namespace: str, template_id: str, total: int) -> Filled:
    """Copy the pending run ``template_id`` into ``total - 1`` more runs, then analyze.

    One transaction, which drops the table's secondary indexes, inserts, and
    creates them again from their own definitions (``pg_get_indexdef``): a
    sorted build is several times faster than a million insertions into each,
    and the indexes end as they were (same names, same definitions).
    ``synchronous_commit`` is off for it (test data: losing it in a server
    crash would not matter); nothing else about the tables changes.
    """
    runs = sql.Identifier(schema, "workflow_runs")
    started = time.monotonic()
    with psycopg.connect(url, autocommit=False) as connection:
        connection.execute("SET LOCAL synchronous_commit = off")
        connection.execute("SET LOCAL maintenance_work_mem = '256MB'")
        indexes = _secondary_indexes(connection, schema, "workflow_runs")
        for name, _ in indexes:
            connection.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(schema, name)))
        cursor = connection.execute(
            sql.SQL(_FILL).format(runs=runs),
            {"count": total - 1, "ns": namespace, "template_id": template_id},
        )
        inserted = cursor.rowcount
        inserted_at = time.monotonic()
        for _, definition in indexes:
            connection.execute(sql.SQL(definition))
        connection.commit()
    indexed_at = time.monotonic()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(sql.SQL("ANALYZE {}").format(runs))
    return Filled(
        rows=inserted + 1,
        insert_s=inserted_at - started,
        index_s=indexed_at - inserted_at,
        analyze_s=time.monotonic() - indexed_at,
    )


def _secondary_indexes(
    connection: psycopg.Connection[Any], schema: str, table: str
) -> list[tuple[str, str]]:
    """``(name, CREATE INDEX statement)`` of every index of ``table`` but its constraints'."""
    rows = connection.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = to_regclass(%s)"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)"
        " ORDER BY c.relname",
        (sql.Identifier(schema, table).as_string(connection),),
    ).fetchall()
    return [(str(name), str(definition)) for name, definition in rows]


def rss_mb(pid: int) -> tuple[float, float]:
    """``(current, peak)`` resident set size of ``pid`` in MB (``VmRSS``, ``VmHWM``)."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024  # kB
    return fields["VmRSS"], fields["VmHWM"]


def rows(url: str, text: LiteralString, schema: str, params: dict[str, Any]) -> list[Any]:
    """The rows ``text`` returns; ``{runs}``, ``{steps}``, ``{ledger}`` name the schema's tables."""
    query = sql.SQL(text).format(
        runs=sql.Identifier(schema, "workflow_runs"),
        steps=sql.Identifier(schema, "step_attempts"),
        ledger=sql.Identifier(schema, "backlog_ledger"),
    )
    with psycopg.connect(url, autocommit=True) as connection:
        return connection.execute(query, params).fetchall()


def scalar(url: str, text: LiteralString, schema: str, params: dict[str, Any]) -> Any:
    """The first value of the first row :func:`rows` returns (None without a row)."""
    found = rows(url, text, schema, params)
    return found[0][0] if found else None


# -- what the test counts ------------------------------------------------------------------

STATUSES = "SELECT status, count(*) FROM {runs} WHERE namespace_id = %(ns)s GROUP BY status"

# Completed runs whose output is not {"n": n, "double": 2n} for their input n.
WRONG_OUTPUTS = """
SELECT count(*) FROM {runs}
WHERE namespace_id = %(ns)s AND status = 'completed'
  AND output IS DISTINCT FROM jsonb_build_object('n', input, 'double', (input::text)::bigint * 2)
"""

# Completed runs whose step body never ran (no ledger row with their value).
UNRUN = """
SELECT count(*) FROM {runs} r
WHERE r.namespace_id = %(ns)s AND r.status = 'completed'
  AND NOT EXISTS (SELECT 1 FROM {ledger} l
                  WHERE l.run_id = r.id AND l.value = (r.input::text)::bigint * 2)
"""

# Extra completions: a step completed by more than one attempt of its run.
DUPLICATED = """
SELECT count(*) - count(DISTINCT (workflow_run_id, step_name)) FROM {steps}
WHERE namespace_id = %(ns)s AND status = 'completed'
"""

# Extra executions of a step body (a second claim of a run that was still leased).
REEXECUTED = "SELECT count(*) - count(DISTINCT (run_id, step_name)) FROM {ledger}"

LATEST_COMPLETED = """
SELECT id FROM {runs} WHERE namespace_id = %(ns)s AND status = 'completed'
ORDER BY created_at DESC LIMIT 1
"""

COMPLETED = "SELECT count(*) FROM {runs} WHERE namespace_id = %(ns)s AND status = 'completed'"

# What every backend has read from the schema's workflow_runs so far (flushed by
# a backend at least when it disconnects, so read after the processes stopped).
TABLE_READS = """
SELECT seq_scan, seq_tup_read, COALESCE(idx_tup_fetch, 0) FROM pg_stat_user_tables
WHERE schemaname = %(schema)s AND relname = 'workflow_runs'
"""


@dataclass(frozen=True)
class TableReads:
    """Sequential scans of ``workflow_runs``, rows they read, rows fetched through indexes."""

    seq_scans: int = 0
    seq_rows: int = 0
    index_rows: int = 0

    def __sub__(self, earlier: TableReads) -> TableReads:
        return TableReads(
            self.seq_scans - earlier.seq_scans,
            self.seq_rows - earlier.seq_rows,
            self.index_rows - earlier.index_rows,
        )

    def text(self) -> str:
        """``N seq scans (M rows), K rows through indexes``."""
        return f"{self.seq_scans} seq scans ({self.seq_rows} rows), {self.index_rows} via indexes"


def table_reads(url: str, schema: str) -> TableReads:
    """The server's counters of reads of ``schema``'s ``workflow_runs``, now."""
    found = rows(url, TABLE_READS, schema, {"schema": schema})
    return TableReads(*(int(value) for value in found[0])) if found else TableReads()
