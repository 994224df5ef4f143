"""PostgreSQL concurrency admission: the part of every claim that enforces ``Concurrency`` limits.

A limited run carries its ``concurrency_key`` and ``concurrency_limit``
(computed when it was created). Its key's row in ``concurrency_keys`` lists
the runs admitted into the key as (id, attempt) pairs; a holder still holds its
slot while its run is running, leased and at that attempt, so finishing,
failing, canceling, parking or rescheduling a run frees the slot with no write
here. Two PostgreSQL facts shape the statement:

- Under READ COMMITTED a statement reads the snapshot taken when it started,
  so counting leased runs would let two racing claims both see a free slot.
  But a row the statement *locks* is read at its newest committed version
  (EvalPlanQual), so the holder list lives in the locked key row: a claim
  that committed after our snapshot is in the list we lock. A holder whose run
  our snapshot still shows at an older attempt was admitted after the
  snapshot and counts as held.
- SKIP LOCKED does not skip rows this same statement locked, so the key rows
  are locked once, as a set, and candidates are paired with room by their rank
  within the key (per-candidate locking would give one slot to two runs).

A key row is written only when runs are admitted into it; a key with no row
yet gets one from the claim that admits its first runs (``ON CONFLICT DO
NOTHING``: if a racing claim created it first, our runs of that key wait for
the next claim). Nothing is leased unless its key row write returned a row.
Locks are taken with SKIP LOCKED only (runs, then key rows); the one wait is
on a racing claim's uncommitted insert of the same new key, and new keys are
inserted in key order so two claims cannot wait on each other.
"""

from __future__ import annotations

# Whether a holder (h: id, attempt) of a key still holds its slot, reading its
# run (hr) at this statement's snapshot: leased and running at that attempt, or
# admitted after the snapshot (the run's attempts are still below it).
HOLDER_HELD = """(hr."attempts" < h."attempt"
         OR (hr."attempts" = h."attempt" AND hr."status" = 'running'
             AND hr."worker_id" IS NOT NULL))"""

# A holder's run, looked up by primary key once per holder (LIMIT 1 keeps the
# planner from hashing every run of the namespace to join a handful).
HOLDER_RUN = """(
          SELECT hr."attempts", hr."status", hr."worker_id" FROM {schema}."workflow_runs" hr
          WHERE hr."namespace_id" = %(ns)s AND hr."id" = h."id" LIMIT 1)"""

# A cheap look ahead while walking candidates: skip runs whose key is full at
# this statement's snapshot (a full key's runs are passed over, never waited
# for). Only a hint: the admission below decides on the locked key rows. A
# run's own old slot (an expired lease being taken over) is not counted.
HAS_ROOM = f"""
      AND ({{run}}."concurrency_key" IS NULL OR {{run}}."concurrency_limit" > (
        SELECT COUNT(*)
        FROM {{{{schema}}}}."concurrency_keys" ck
        CROSS JOIN LATERAL unnest(ck."holder_ids", ck."holder_attempts") AS h("id", "attempt")
        CROSS JOIN LATERAL {HOLDER_RUN.replace("{", "{{").replace("}", "}}")} AS hr
        WHERE ck."namespace_id" = %(ns)s AND ck."workflow_name" = {{run}}."workflow_name"
          AND ck."concurrency_key" = {{run}}."concurrency_key" AND h."id" <> {{run}}."id"
          AND {HOLDER_HELD}))"""

# From "pool" (the locked candidates: id, claimed_from, lease_expired,
# attempts, workflow_name, concurrency_key, concurrency_limit, position) to
# "candidate" (id, claimed_from, lease_expired, position): the unlimited ones
# and the limited ones admitted into their key, renumbered in claim order.
ADMISSION = f""",
pool_key AS MATERIALIZED (
  SELECT DISTINCT "workflow_name", "concurrency_key" FROM pool
  WHERE "concurrency_key" IS NOT NULL
),
key_locked AS MATERIALIZED (
  SELECT ck."workflow_name", ck."concurrency_key", ck."holder_ids", ck."holder_attempts"
  FROM {{schema}}."concurrency_keys" ck
  WHERE ck."namespace_id" = %(ns)s
    AND (ck."workflow_name", ck."concurrency_key") IN (
      SELECT "workflow_name", "concurrency_key" FROM pool_key)
  FOR UPDATE SKIP LOCKED
),
-- Keys with no row at all (their first runs): the claim creates the row.
key_missing AS MATERIALIZED (
  SELECT pk."workflow_name", pk."concurrency_key" FROM pool_key pk
  WHERE NOT EXISTS (
    SELECT 1 FROM {{schema}}."concurrency_keys" ck
    WHERE ck."namespace_id" = %(ns)s AND ck."workflow_name" = pk."workflow_name"
      AND ck."concurrency_key" = pk."concurrency_key")
),
key_holder AS MATERIALIZED (
  SELECT kl."workflow_name", kl."concurrency_key", h."id", h."attempt",
         h."id" IN (SELECT "id" FROM pool) AS "in_pool"
  FROM key_locked kl
  CROSS JOIN LATERAL unnest(kl."holder_ids", kl."holder_attempts") AS h("id", "attempt")
  CROSS JOIN LATERAL {HOLDER_RUN} AS hr
  WHERE {HOLDER_HELD}
),
-- Takeovers first within a key (their own old slot is theirs), then claim order.
ranked AS (
  SELECT p.*,
         ROW_NUMBER() OVER (PARTITION BY p."workflow_name", p."concurrency_key"
                            ORDER BY p."lease_expired" DESC, p."position") AS "key_rank",
         (SELECT COUNT(*) FROM key_holder kh
          WHERE kh."workflow_name" = p."workflow_name"
            AND kh."concurrency_key" = p."concurrency_key" AND NOT kh."in_pool") AS "held",
         EXISTS (SELECT 1 FROM key_locked kl
                 WHERE kl."workflow_name" = p."workflow_name"
                   AND kl."concurrency_key" = p."concurrency_key")
         OR EXISTS (SELECT 1 FROM key_missing km
                    WHERE km."workflow_name" = p."workflow_name"
                      AND km."concurrency_key" = p."concurrency_key") AS "key_in_hand"
  FROM pool p
),
admitted AS MATERIALIZED (
  SELECT "id", "claimed_from", "lease_expired", "attempts", "workflow_name",
         "concurrency_key", "position"
  FROM ranked
  WHERE "concurrency_key" IS NULL
     OR ("key_in_hand" AND "key_rank" <= "concurrency_limit" - "held")
),
-- A key's holders after this claim: those still held (not re-admitted here)
-- and the runs admitted now, at the attempt their lease gives them.
key_entry AS MATERIALIZED (
  SELECT "workflow_name", "concurrency_key", "id", "attempt" FROM key_holder
  WHERE "id" NOT IN (SELECT "id" FROM admitted)
  UNION ALL
  SELECT "workflow_name", "concurrency_key", "id", "attempts" + 1 FROM admitted
  WHERE "concurrency_key" IS NOT NULL
),
key_holders_after AS (
  SELECT pk."workflow_name", pk."concurrency_key",
         ARRAY(SELECT ke."id" FROM key_entry ke
               WHERE ke."workflow_name" = pk."workflow_name"
                 AND ke."concurrency_key" = pk."concurrency_key" ORDER BY ke."id") AS "ids",
         ARRAY(SELECT ke."attempt" FROM key_entry ke
               WHERE ke."workflow_name" = pk."workflow_name"
                 AND ke."concurrency_key" = pk."concurrency_key" ORDER BY ke."id") AS "attempts"
  FROM pool_key pk
  WHERE EXISTS (SELECT 1 FROM admitted a
                WHERE a."workflow_name" = pk."workflow_name"
                  AND a."concurrency_key" = pk."concurrency_key")
),
key_written AS (
  UPDATE {{schema}}."concurrency_keys" ck
  SET "holder_ids" = after."ids", "holder_attempts" = after."attempts", "updated_at" = NOW()
  FROM key_holders_after after, key_locked kl
  WHERE ck."namespace_id" = %(ns)s AND ck."workflow_name" = after."workflow_name"
    AND ck."concurrency_key" = after."concurrency_key"
    AND kl."workflow_name" = after."workflow_name"
    AND kl."concurrency_key" = after."concurrency_key"
  RETURNING ck."workflow_name", ck."concurrency_key"
),
key_created AS (
  INSERT INTO {{schema}}."concurrency_keys" AS ck
    ("namespace_id", "workflow_name", "concurrency_key", "holder_ids", "holder_attempts")
  SELECT %(ns)s, after."workflow_name", after."concurrency_key", after."ids", after."attempts"
  FROM key_holders_after after
  JOIN key_missing km USING ("workflow_name", "concurrency_key")
  ORDER BY after."workflow_name", after."concurrency_key"
  ON CONFLICT DO NOTHING
  RETURNING ck."workflow_name", ck."concurrency_key"
),
key_granted AS (
  SELECT "workflow_name", "concurrency_key" FROM key_written
  UNION ALL
  SELECT "workflow_name", "concurrency_key" FROM key_created
),
candidate AS (
  SELECT a."id", a."claimed_from", a."lease_expired",
         ROW_NUMBER() OVER (ORDER BY a."position") AS "position"
  FROM admitted a
  WHERE a."concurrency_key" IS NULL
     OR EXISTS (SELECT 1 FROM key_granted kg
                WHERE kg."workflow_name" = a."workflow_name"
                  AND kg."concurrency_key" = a."concurrency_key")
)"""

# The fair branch's fragments hold {schema} as the final statement does and
# take their other parts by str.replace (<<name>>), never str.format.

# Whether a key has room at this statement's snapshot (a hint, as HAS_ROOM).
_KEY_HAS_ROOM = f"""(r."concurrency_limit" > (
          SELECT COUNT(*) FROM {{schema}}."concurrency_keys" ck
          CROSS JOIN LATERAL unnest(ck."holder_ids", ck."holder_attempts") AS h("id", "attempt")
          CROSS JOIN LATERAL {HOLDER_RUN} AS hr
          WHERE ck."namespace_id" = %(ns)s AND ck."workflow_name" = r."workflow_name"
            AND ck."concurrency_key" = r."concurrency_key" AND {HOLDER_HELD}))"""

# One step of the walk over keys: the next (workflow, key) of pending limited
# runs after <<after>>, one index descent (workflow_runs_pending_concurrency_idx),
# and whether that key has room.
_NEXT_KEY = f"""(
          SELECT r."workflow_name", r."concurrency_key", {_KEY_HAS_ROOM} AS "room"
          FROM {{schema}}."workflow_runs" r
          WHERE r."namespace_id" = %(ns)s AND r."status" = 'pending'
            AND r."concurrency_key" IS NOT NULL<<scope>>
            AND <<position>> > <<after>>
          ORDER BY r."workflow_name", r."concurrency_key"
          LIMIT 1)"""

_WALK = """WITH RECURSIVE key_walk("workflow_name", "concurrency_key", "room", "step", "found")
        AS (
          SELECT k."workflow_name", k."concurrency_key", k."room", 1, k."room"::int
          FROM <<first>> AS k
          UNION ALL
          SELECT k."workflow_name", k."concurrency_key", k."room", key_walk."step" + 1,
                 key_walk."found" + k."room"::int
          FROM key_walk CROSS JOIN LATERAL <<next>> AS k
          -- Twice the runs wanted is enough keys (a racing claim may lock a
          -- head first); more would only cost index descents.
          WHERE key_walk."step" < %(fair_steps)s
            AND key_walk."found" < LEAST(%(fair_keys)s, 2 * %(claim_limit)s)
        )
        SELECT key_head."id" FROM key_walk CROSS JOIN LATERAL (
          SELECT r."id" FROM {schema}."workflow_runs" r
          WHERE r."namespace_id" = %(ns)s AND r."status" = 'pending'
            AND r."workflow_name" = key_walk."workflow_name"
            AND r."concurrency_key" = key_walk."concurrency_key"
            AND r."concurrency_key" IS NOT NULL AND r."available_at" <= NOW()<<version>>
          ORDER BY COALESCE(r."priority", 0) DESC, r."available_at", r."created_at"
          LIMIT 1) AS key_head
        WHERE key_walk."room" """

_ROUTED_HEADS = """SELECT head."id"
      FROM unnest(%(route_names)b::text[], %(route_versions)b::text[]) AS route("name", "version")
      CROSS JOIN LATERAL (
        <<walk>>
      ) AS head"""

_FAIR_BRANCH = """  SELECT "id", 'pending' AS "claimed_from", <<columns>> FROM (
    SELECT <<locked>>
    FROM {schema}."workflow_runs" wr
    WHERE wr."namespace_id" = %(ns)s AND wr."id" = ANY(ARRAY(
      <<heads>>))
      AND wr."status" = 'pending' AND wr."available_at" <= NOW()
      AND (wr."deadline_at" IS NULL OR wr."deadline_at" > NOW())<<filters>>
    ORDER BY COALESCE(wr."priority", 0) DESC, wr."available_at", wr."created_at"
    LIMIT %(claim_limit)s
    FOR UPDATE SKIP LOCKED) AS "fair_pending"
"""


def _filled(template: str, **parts: str) -> str:
    for name, part in parts.items():
        template = template.replace(f"<<{name}>>", part)
    return template


def _walk_step(*, routed: bool, after: str) -> str:
    if routed:  # one workflow's keys: compare keys only
        scope = '\n            AND r."workflow_name" = route."name"'
        position = 'r."concurrency_key"'
    else:
        scope, position = "", '(r."workflow_name", r."concurrency_key")'
    return _filled(_NEXT_KEY, scope=scope, position=position, after=after)


def fair_pending_branch(*, routed: bool, columns: str, locked: str, filters: str) -> str:
    """The fair branch: runs only when the branches before it fell short.

    With limited runs that means the front of the queue is full keys (a hot
    key's backlog would otherwise hide every other key behind it). A loose
    index scan walks the distinct (workflow, key) pairs of pending limited runs
    after the worker's cursor, one index descent per key, passing over full
    keys, until it has found %(fair_keys)s keys with room (at most twice the
    runs wanted) or taken
    %(fair_steps)s steps, whatever the backlog; it takes each such key's head
    run. The cursor moves on with every claim, so keys take turns (round
    robin); within a key the order is still priority, then due time. A routed
    claim walks each registered workflow's own keys (a key belongs to one
    workflow), so other workflows' keys never hide them.
    """
    if routed:
        walk = _filled(
            _WALK,
            first=_walk_step(routed=True, after="%(fair_after_key)s::text"),
            next=_walk_step(routed=True, after='key_walk."concurrency_key"'),
            version='\n            AND r."version" IS NOT DISTINCT FROM route."version"',
        )
        heads = _filled(_ROUTED_HEADS, walk=walk)
    else:
        heads = _filled(
            _WALK,
            first=_walk_step(
                routed=False, after="(%(fair_after_workflow)s::text, %(fair_after_key)s::text)"
            ),
            next=_walk_step(
                routed=False, after='(key_walk."workflow_name", key_walk."concurrency_key")'
            ),
            version="",
        )
    return _filled(_FAIR_BRANCH, heads=heads, columns=columns, locked=locked, filters=filters)
