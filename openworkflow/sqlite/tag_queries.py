"""SQLite statements of run tags.

The ``run_tags`` table is this port's; the TypeScript original neither reads
nor writes it. Each tag row carries a copy of its run's ``created_at``, so a
filtered list walks ``run_tags_filter_idx`` newest first and looks each run up
by its primary key, stopping after one page.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from functools import cache

INSERT_RUN_TAG = """
INSERT INTO "run_tags" ("namespace_id", "workflow_run_id", "key", "value", "created_at")
VALUES (:ns, :run_id, :key, :value, :created_at)"""

SELECT_RUN_TAGS = """
SELECT "key", "value" FROM "run_tags"
WHERE "namespace_id" = :ns AND "workflow_run_id" = :run_id
ORDER BY "key\""""

# The first tag drives the scan (its index range, in list order); the others
# are checked per run by primary key.
_TAGGED_PAGE = """
SELECT wr.* FROM "run_tags" t0
JOIN "workflow_runs" wr ON wr."namespace_id" = t0."namespace_id" AND wr."id" = t0."workflow_run_id"
WHERE t0."namespace_id" = :ns AND t0."key" = :tag_k0 AND t0."value" = :tag_v0{where}
ORDER BY t0."created_at" {order}, t0."workflow_run_id" {order}
LIMIT :limit"""

_OTHER_TAG = """
  AND EXISTS (
    SELECT 1 FROM "run_tags" t{n}
    WHERE t{n}."namespace_id" = t0."namespace_id" AND t{n}."workflow_run_id" = t0."workflow_run_id"
      AND t{n}."key" = :tag_k{n} AND t{n}."value" = :tag_v{n}
  )"""


def insert_run_tags(
    c: sqlite3.Connection, namespace_id: str, run_id: str, created_at: str, tags: Mapping[str, str]
) -> None:
    """Write a new run's tags (inside the transaction that inserted the run)."""
    c.executemany(
        INSERT_RUN_TAG,
        [
            {
                "ns": namespace_id,
                "run_id": run_id,
                "key": key,
                "value": value,
                "created_at": created_at,
            }
            for key, value in tags.items()
        ],
    )


@cache
def tagged_page_query(
    tag_count: int, conditions: tuple[str, ...], order: str, cursor_op: str | None
) -> str:
    """A page of runs carrying ``tag_count`` tags (bound ``:tag_k0``, ``:tag_v0``...).

    ``conditions`` are constant SQL on the run (``wr``); ``order`` and
    ``cursor_op`` come from :func:`~openworkflow.backend_common.plan_page`.
    """
    where = "".join(_OTHER_TAG.format(n=n) for n in range(1, tag_count))
    where += "".join(f"\n  AND {condition}" for condition in conditions)
    if cursor_op is not None:
        where += (
            f'\n  AND (t0."created_at", t0."workflow_run_id") {cursor_op} '
            "(:cursor_created_at, :cursor_id)"
        )
    return _TAGGED_PAGE.format(where=where, order=order)


RAREST_TAG_CAP = 1000
"""Tag rows counted per filter tag when choosing which tag drives the scan."""

# SQLite keeps no per-value statistics, so it would walk the first tag given
# even when it matches a quarter of the table and another matches ten runs.
_CAPPED_TAG_ROWS = """
SELECT COUNT(*) FROM (
  SELECT 1 FROM "run_tags" WHERE "namespace_id" = :ns AND "key" = :key AND "value" = :value
  LIMIT :cap
)"""


def rarest_first(
    c: sqlite3.Connection, namespace_id: str, tags: Mapping[str, str]
) -> dict[str, str]:
    """``tags`` reordered so the one with the fewest runs (counted up to a cap) comes first."""
    if len(tags) < 2:
        return dict(tags)

    def rows(item: tuple[str, str]) -> int:
        values = {"ns": namespace_id, "key": item[0], "value": item[1], "cap": RAREST_TAG_CAP}
        return int(c.execute(_CAPPED_TAG_ROWS, values).fetchone()[0])

    return dict(sorted(tags.items(), key=rows))


def tag_filter_values(tags: Mapping[str, str]) -> dict[str, str]:
    """The values a :func:`tagged_page_query` statement binds for ``tags``."""
    values: dict[str, str] = {}
    for n, (key, value) in enumerate(tags.items()):
        values[f"tag_k{n}"] = key
        values[f"tag_v{n}"] = value
    return values
