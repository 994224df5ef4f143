"""Run tags on the dashboard (issue 20 item 3): shown escaped on the run page, a list filter."""

from __future__ import annotations

import html
import re
from typing import Any

from openworkflow import OpenWorkflow
from tests.dashboard.helpers import dashboard_client, double_it, greet, link, run_ids, section


def _older_link(page: str) -> str | None:
    return link(page, "page-older")


async def test_run_page_shows_tags_escaped_and_linked_to_the_filter(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    hostile = '<script>alert("x")</script>'
    handle = await ow.run(greet, {"name": "Ada"}, tags={"customer": "c-1", "note": hostile})
    plain = await ow.run(greet, {"name": "Bob"})
    async with dashboard_client(backend) as client:
        page = (await client.get(f"/runs/{handle.id}")).text
        untagged = (await client.get(f"/runs/{plain.id}")).text
    tags = section(page, "run-tags") or ""
    assert "<code>customer=c-1</code>" in tags
    assert hostile not in page
    assert "note=&lt;script&gt;alert(" in tags
    hrefs = [html.unescape(h) for h in re.findall(r'class="tag" href="([^"]+)"', page)]
    assert "/?tag=customer%3Dc-1" in hrefs
    assert 'id="run-tags"' not in untagged


async def test_runs_list_filters_by_tags_with_status_workflow_and_pages(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    tagged = [(await ow.run(greet, {"name": f"n{n}"}, tags={"team": "a b&c"})).id for n in range(4)]
    other_workflow = (await ow.run(double_it, 1, tags={"team": "a b&c"})).id
    second_tag = (await ow.run(greet, {"name": "x"}, tags={"team": "a b&c", "env": "prod"})).id
    await ow.run(greet, {"name": "untagged"})
    await ow.run(greet, {"name": "other team"}, tags={"team": "z"})
    everyone = set(tagged) | {other_workflow, second_tag}
    async with dashboard_client(backend) as client:
        page = (await client.get("/", params={"tag": "team=a b&c"})).text
        assert set(run_ids(page)) == everyone
        # The filter is shown back in the form (escaped) and counts as a filter.
        assert 'value="team=a b&amp;c"' in page and "clear-filters" in page

        both = (await client.get("/", params=[("tag", "team=a b&c"), ("tag", "env=prod")])).text
        assert run_ids(both) == [second_tag]
        by_workflow = (
            await client.get("/", params={"tag": "team=a b&c", "workflow": double_it.spec.name})
        ).text
        assert run_ids(by_workflow) == [other_workflow]
        pending = (await client.get("/", params={"tag": "team=a b&c", "status": "pending"})).text
        assert set(run_ids(pending)) == everyone
        assert (
            run_ids((await client.get("/", params={"tag": "team=a b&c", "status": "failed"})).text)
            == []
        )
        # An empty extra tag input (the form always has one) is ignored.
        blank = (await client.get("/", params=[("tag", "team=z"), ("tag", "")])).text
        assert len(run_ids(blank)) == 1

        # Pages of 25: the older link keeps the tag filter.
        for n in range(25):
            await ow.run(greet, {"name": f"more{n}"}, tags={"team": "a b&c"})
        first = (await client.get("/", params={"tag": "team=a b&c"})).text
        older = _older_link(first)
        assert older is not None and "tag=team%3Da+b%26c" in older
        second = (await client.get(older)).text
        listed = run_ids(first) + run_ids(second)
        assert len(listed) == len(set(listed)) == 31
        assert everyone <= set(listed)

        bad = await client.get("/", params={"tag": "no-equals-sign"})
        assert bad.status_code == 400 and "key=value" in html.unescape(bad.text)
