"""PostgreSQL statements that create many runs at once (``ow.run_many``, grouped ``ow.run``).

The runs travel as arrays, one per column, unnested in one statement, so a
batch costs one round trip and one commit however many runs it holds.
"""

from __future__ import annotations

from openworkflow.postgres.sql_fragments import NOTIFY_WORK

# The same advisory locks a single create takes (one per idempotency scope),
# taken in the order of their keys, so two batches sharing scopes cannot
# deadlock; a single create holds only one.
LOCK_IDEMPOTENCY_SCOPES = """
SELECT pg_advisory_xact_lock("key")
FROM (
  SELECT DISTINCT hashtextextended("scope", 0::bigint) AS "key"
  FROM unnest(%(scopes)b::text[]) AS s("scope")
  ORDER BY 1
) AS ordered"""

# Run after LOCK_IDEMPOTENCY_SCOPES (a statement of its own, so this one's
# snapshot sees every run committed by a creator that held a lock first).
# A keyed item whose run exists is not inserted: its row comes back with the
# item's position (1-based) in the trailing column. A new run comes back with
# NULL there, and its tags are inserted in the same statement, so a run is
# never seen without its tags. Every new run notifies (PostgreSQL sends one
# notification per distinct payload and transaction).
INSERT_WORKFLOW_RUNS = f"""
WITH item AS (
  SELECT * FROM unnest(
    %(ids)b::text[], %(workflow_names)b::text[], %(versions)b::text[],
    %(idempotency_keys)b::text[], %(configs)b::jsonb[], %(contexts)b::jsonb[],
    %(inputs)b::jsonb[], %(parent_nss)b::text[], %(parent_ids)b::text[],
    %(available_ats)b::timestamptz[], %(deadline_ats)b::timestamptz[], %(priorities)b::integer[],
    %(scheduled_ats)b::timestamptz[], %(concurrency_keys)b::text[],
    %(concurrency_limits)b::integer[]
  ) WITH ORDINALITY AS i(
    "id", "workflow_name", "version", "idempotency_key", "config", "context", "input",
    "parent_ns", "parent_id", "available_at", "deadline_at", "priority", "scheduled_at",
    "concurrency_key", "concurrency_limit", "position"
  )
),
existing AS (
  SELECT DISTINCT ON (item."position") item."position", wr."id"
  FROM item
  JOIN {{schema}}."workflow_runs" wr
    ON wr."namespace_id" = %(ns)s AND wr."workflow_name" = item."workflow_name"
   AND wr."idempotency_key" = item."idempotency_key"
   AND wr."created_at" >= NOW() - %(period_ms)s * INTERVAL '1 millisecond'
  ORDER BY item."position", wr."created_at" ASC, wr."id" ASC
),
inserted AS (
  INSERT INTO {{schema}}."workflow_runs" (
    "namespace_id", "id", "workflow_name", "version", "status", "idempotency_key",
    "config", "context", "input", "attempts", "parent_step_attempt_namespace_id",
    "parent_step_attempt_id", "available_at", "deadline_at", "created_at", "updated_at",
    "priority", "scheduled_at", "concurrency_key", "concurrency_limit"
  )
  SELECT %(ns)s, item."id", item."workflow_name", item."version", 'pending',
    item."idempotency_key", item."config", item."context", item."input", 0, item."parent_ns",
    item."parent_id", COALESCE(item."available_at", NOW()), item."deadline_at",
    date_trunc('milliseconds', NOW()), NOW(), item."priority", item."scheduled_at",
    item."concurrency_key", item."concurrency_limit"
  FROM item
  WHERE NOT EXISTS (SELECT 1 FROM existing WHERE existing."position" = item."position")
  ORDER BY item."position"
  RETURNING *
),
tagged AS (
  INSERT INTO {{schema}}."run_tags" (
    "namespace_id", "workflow_run_id", "key", "value", "created_at"
  )
  SELECT inserted."namespace_id", inserted."id", t."key", t."value", inserted."created_at"
  FROM unnest(%(tag_run_ids)b::text[], %(tag_keys)b::text[], %(tag_values)b::text[])
    AS t("run_id", "key", "value")
  JOIN inserted ON inserted."id" = t."run_id"
)
SELECT inserted.*, NULL::bigint, {NOTIFY_WORK}::text FROM inserted
UNION ALL
SELECT wr.*, existing."position", NULL::text
FROM existing
JOIN {{schema}}."workflow_runs" wr ON wr."namespace_id" = %(ns)s AND wr."id" = existing."id"
"""
