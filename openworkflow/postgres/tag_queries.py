"""PostgreSQL statements of run tags, rendered once per schema.

The ``run_tags`` table is this port's; the TypeScript original neither reads
nor writes it. Each tag row carries a copy of its run's ``created_at``, so a
filtered list walks ``run_tags_filter_idx`` newest first and joins each run by
its primary key, stopping after one page.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

from openworkflow.postgres.schema import render

# Run in the transaction that inserted the run: the tag rows copy the stored
# run's namespace, id and created_at (so they match it to the microsecond).
INSERT_RUN_TAGS = """
INSERT INTO {schema}."run_tags" (
  "namespace_id", "workflow_run_id", "key", "value", "created_at"
)
SELECT wr."namespace_id", wr."id", t."key", t."value", wr."created_at"
FROM {schema}."workflow_runs" wr,
  unnest(%(tag_keys)b::text[], %(tag_values)b::text[]) AS t("key", "value")
WHERE wr."namespace_id" = %(ns)s AND wr."id" = %(run_id)s"""

SELECT_RUN_TAGS = """
SELECT "key", "value" FROM {schema}."run_tags"
WHERE "namespace_id" = %(ns)s AND "workflow_run_id" = %(run_id)s
ORDER BY "key\""""

_TEMPLATES = {
    "insert_run_tags": INSERT_RUN_TAGS,
    "select_run_tags": SELECT_RUN_TAGS,
}

# The first tag's index range, read backwards, yields its runs in list order;
# the others are semi-joins on the primary key. PostgreSQL reorders them when
# another tag is rarer (its estimates): it then reads that tag's runs and sorts.
_TAGGED_PAGE = """
SELECT wr.* FROM {{schema}}."run_tags" t0
JOIN {{schema}}."workflow_runs" wr
  ON wr."namespace_id" = t0."namespace_id" AND wr."id" = t0."workflow_run_id"
WHERE t0."namespace_id" = %(ns)s AND t0."key" = %(tag_k0)s AND t0."value" = %(tag_v0)s{where}
ORDER BY t0."created_at" {order}, t0."workflow_run_id" {order}
LIMIT %(limit)s"""

_OTHER_TAG = """
  AND EXISTS (
    SELECT 1 FROM {{schema}}."run_tags" t{n}
    WHERE t{n}."namespace_id" = t0."namespace_id" AND t{n}."workflow_run_id" = t0."workflow_run_id"
      AND t{n}."key" = %(tag_k{n})s AND t{n}."value" = %(tag_v{n})s
  )"""


class TagQueries:
    """The statements above rendered for one schema, ready to execute."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        for name, template in _TEMPLATES.items():
            setattr(self, name, render(template, schema).encode())

    insert_run_tags: bytes
    select_run_tags: bytes

    def tagged_page(
        self, tag_count: int, conditions: tuple[str, ...], order: str, cursor_op: str | None
    ) -> bytes:
        """A page of runs carrying ``tag_count`` tags (bound ``tag_k0``, ``tag_v0``...).

        ``conditions`` are constant SQL on the run (``wr``); ``order`` and
        ``cursor_op`` come from :func:`~openworkflow.backend_common.plan_page`.
        """
        return _tagged_page(self.schema, tag_count, conditions, order, cursor_op)


@cache
def _tagged_page(
    schema: str, tag_count: int, conditions: tuple[str, ...], order: str, cursor_op: str | None
) -> bytes:
    where = "".join(_OTHER_TAG.format(n=n) for n in range(1, tag_count))
    where += "".join(f"\n  AND {condition}" for condition in conditions)
    if cursor_op is not None:
        where += f'\n  AND (t0."created_at", t0."workflow_run_id") {cursor_op} (%(c_at)s, %(c_id)s)'
    # Formatting leaves the "{schema}" of each part for render to fill.
    return render(_TAGGED_PAGE.format(where=where, order=order), schema).encode()


@cache
def tag_queries(schema: str) -> TagQueries:
    """The tag statements for ``schema`` (rendered once per schema)."""
    return TagQueries(schema)


def tag_arrays(tags: Mapping[str, str]) -> dict[str, list[str]]:
    """The values :data:`INSERT_RUN_TAGS` binds for ``tags`` (keys and values as arrays)."""
    return {"tag_keys": list(tags), "tag_values": list(tags.values())}


def tag_filter_values(tags: Mapping[str, str]) -> dict[str, str]:
    """The values a :meth:`TagQueries.tagged_page` statement binds for ``tags``."""
    values: dict[str, str] = {}
    for n, (key, value) in enumerate(tags.items()):
        values[f"tag_k{n}"] = key
        values[f"tag_v{n}"] = value
    return values
