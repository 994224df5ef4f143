"""SQLite concurrency admission: which claimable runs fit their key's ``Concurrency`` limit.

The claim runs under ``BEGIN IMMEDIATE``: SQLite has one writer, so the
holders it counts (runs of the key that are running and leased) are the
current ones and no racing claim can admit into the key meanwhile. A run
being taken over (its lease expired) does not count against itself, and goes
before the key's other candidates: it already holds the key's slot.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from openworkflow.core import json as ow_json

# A cheap filter while walking candidates (the claim's queries): skip runs
# whose key is full, so a full key's backlog never fills the claim. A run
# being taken over does not count against itself. :enforce = 0 (a worker none
# of whose workflows is limited) ignores keys, as PostgreSQL's cheaper claim does.
HAS_ROOM = """
  AND (:enforce = 0 OR "workflow_runs"."concurrency_key" IS NULL
       OR "workflow_runs"."concurrency_limit" > (
    SELECT COUNT(*) FROM "workflow_runs" holder
    WHERE holder."namespace_id" = :ns AND holder."workflow_name" = "workflow_runs"."workflow_name"
      AND holder."concurrency_key" = "workflow_runs"."concurrency_key"
      AND holder."status" = 'running' AND holder."worker_id" IS NOT NULL
      AND holder."concurrency_key" IS NOT NULL AND holder."id" <> "workflow_runs"."id"))"""

_SELECT_KEYS = """
SELECT "id", "workflow_name", "concurrency_key", "concurrency_limit" FROM "workflow_runs"
WHERE "namespace_id" = :ns AND "concurrency_key" IS NOT NULL
  AND "id" IN (SELECT value FROM json_each(:ids))"""

_COUNT_HOLDERS = """
SELECT COUNT(*) FROM "workflow_runs"
WHERE "namespace_id" = :ns AND "workflow_name" = :workflow_name
  AND "concurrency_key" = :concurrency_key AND "status" = 'running'
  AND "worker_id" IS NOT NULL AND "id" NOT IN (SELECT value FROM json_each(:ids))"""

Due = tuple[Any, bool]
"""A claimable run: its id, and whether a worker still held it (its lease expired)."""


def admit(c: sqlite3.Connection, ns: str, due: Sequence[Due], wanted: int) -> list[Due]:
    """The first ``wanted`` of ``due`` (claim order) that fit their keys' limits."""
    ids = ow_json.dumps([run_id for run_id, _ in due])
    keyed = {
        row[0]: ((row[1], row[2]), int(row[3]))
        for row in c.execute(_SELECT_KEYS, {"ns": ns, "ids": ids})
    }
    if not keyed:
        return list(due[:wanted])
    # Per key: runs holding a slot (other than these candidates), then each
    # admitted here; a run fits while that count is below its own limit (the
    # one stored when it was created), as on PostgreSQL.
    taken: dict[tuple[str, str], int] = {}
    for key in {key for key, _ in keyed.values()}:
        params = {"ns": ns, "workflow_name": key[0], "concurrency_key": key[1], "ids": ids}
        taken[key] = int(c.execute(_COUNT_HOLDERS, params).fetchone()[0])
    admitted: set[Any] = set()
    # Takeovers first: each already holds its key's slot.
    for takeover_first in (True, False):
        for run_id, lease_expired in due:
            if run_id in keyed and lease_expired == takeover_first:
                key, limit = keyed[run_id]
                if taken[key] < limit:
                    taken[key] += 1
                    admitted.add(run_id)
    kept = [item for item in due if item[0] not in keyed or item[0] in admitted]
    return kept[:wanted]


# The fair walk (when the claim fell short: the front of the queue is full
# keys): distinct (workflow, key) pairs of pending limited runs after a
# cursor, one index descent each on workflow_runs_pending_concurrency_idx,
# then each key's head run if it is claimable and its key has room.
_NEXT_PENDING_KEY_OF_WORKFLOW = """
SELECT "workflow_name", "concurrency_key" FROM "workflow_runs"
WHERE "namespace_id" = :ns AND "status" = 'pending' AND "concurrency_key" IS NOT NULL
  AND "workflow_name" = :workflow_name AND "concurrency_key" > :after_key
ORDER BY "concurrency_key"
LIMIT 1"""

_NEXT_PENDING_KEY = """
SELECT "workflow_name", "concurrency_key" FROM "workflow_runs"
WHERE "namespace_id" = :ns AND "status" = 'pending' AND "concurrency_key" IS NOT NULL
  AND ("workflow_name", "concurrency_key") > (:after_workflow, :after_key)
ORDER BY "workflow_name", "concurrency_key"
LIMIT 1"""


def next_pending_keys(
    c: sqlite3.Connection,
    ns: str,
    cursor: tuple[str, str],
    count: int,
    workflow_names: Sequence[str] | None = None,
) -> list[tuple[str, str]]:
    """Distinct (workflow, key) pairs of pending limited runs after ``cursor``.

    ``count`` of them in (workflow, key) order; with ``workflow_names`` (a
    routed claim), ``count`` keys of each of those workflows after the
    cursor's key instead, so other workflows' keys never hide them.
    """
    if workflow_names is None:
        return _walk(c, _NEXT_PENDING_KEY, {"ns": ns}, cursor, count)
    keys: list[tuple[str, str]] = []
    for name in dict.fromkeys(workflow_names):
        values = {"ns": ns, "workflow_name": name}
        keys += _walk(c, _NEXT_PENDING_KEY_OF_WORKFLOW, values, (name, cursor[1]), count)
    return keys


def _walk(
    c: sqlite3.Connection, query: str, values: dict[str, str], after: tuple[str, str], count: int
) -> list[tuple[str, str]]:
    keys: list[tuple[str, str]] = []
    while len(keys) < count:
        row = c.execute(query, {**values, "after_workflow": after[0], "after_key": after[1]})
        found = row.fetchone()
        if found is None:
            break
        after = (found[0], found[1])
        keys.append(after)
    return keys
