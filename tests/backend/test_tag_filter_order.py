"""A filter on two tags gives the same pages whichever tag is given first.

On SQLite the rarest tag (counted up to a cap) drives the scan, so a broad tag
given first no longer walks a quarter of the table; PostgreSQL's planner
chooses by its statistics. Either way the runs and their order must not change.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from openworkflow.core.backend import ListWorkflowRunsParams
from openworkflow.sqlite import tag_queries
from tests.backend.helpers import create_pending_run


async def _all_pages(backend: Any, tags: dict[str, str]) -> list[list[str]]:
    pages: list[list[str]] = []
    after = None
    while True:
        page = await backend.list_workflow_runs(
            ListWorkflowRunsParams(tags=tags, limit=2, after=after)
        )
        pages.append([run.id for run in page.data])
        if page.next is None:
            return pages
        after = page.next


async def test_two_tags_give_the_same_pages_in_either_order(backend: Any) -> None:
    wanted: list[str] = []
    for index in range(12):
        tags = {"region": "eu", "customer": "c-1" if index % 3 == 0 else f"c-other-{index}"}
        run = await create_pending_run(backend, workflow_name="tagged", tags=tags)
        if index % 3 == 0:
            wanted.append(run.id)
    await create_pending_run(backend, workflow_name="tagged", tags={"customer": "c-1"})

    broad_first = await _all_pages(backend, {"region": "eu", "customer": "c-1"})
    rare_first = await _all_pages(backend, {"customer": "c-1", "region": "eu"})

    assert broad_first == rare_first
    assert [run_id for page in broad_first for run_id in page] == wanted[::-1]


def test_sqlite_puts_the_rarest_tag_first() -> None:
    connection = sqlite3.connect(":memory:")
    connection.execute(
        'CREATE TABLE "run_tags" ("namespace_id", "workflow_run_id", "key", "value", "created_at")'
    )
    rows = [("ns", f"r{n}", "region", "eu", "t") for n in range(30)]
    rows += [("ns", f"r{n}", "customer", "c-1", "t") for n in range(3)]
    rows += [("other", f"o{n}", "customer", "c-1", "t") for n in range(50)]
    connection.executemany('INSERT INTO "run_tags" VALUES (?, ?, ?, ?, ?)', rows)

    ordered = tag_queries.rarest_first(connection, "ns", {"region": "eu", "customer": "c-1"})

    assert list(ordered.items()) == [("customer", "c-1"), ("region", "eu")]
    # One tag, or a tie: the order given.
    assert tag_queries.rarest_first(connection, "ns", {"region": "eu"}) == {"region": "eu"}
    tie = {"x": "1", "y": "2"}
    assert list(tag_queries.rarest_first(connection, "ns", tie)) == ["x", "y"]
