"""Pages on every backend: counts, the runs list (pages, filters), run detail, 404s."""

from __future__ import annotations

import asyncio
import html
import re
from typing import Any

from openworkflow import OpenWorkflow
from tests.dashboard.helpers import (
    count_of,
    dashboard_client,
    double_it,
    explode,
    greet,
    link,
    parent_flow,
    run_ids,
    run_status,
    section,
)
from tests.worker.helpers import running_worker, wait_for_status


async def _ids(ow: OpenWorkflow, **filters: Any) -> list[str]:
    """Run ids in the library's newest-first order."""
    return [run.id for run in (await ow.list_runs(limit=1000, **filters)).data]


async def test_index_shows_counts_and_runs_newest_first(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    first = await ow.run(greet, {"name": "Ada"})
    await asyncio.sleep(0.005)  # distinct creation times: a clear newest-first order
    second = await ow.run(greet, {"name": "Grace"})
    await ow.cancel(first.id)
    async with dashboard_client(backend) as client:
        page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert run_ids(page.text) == [second.id, first.id]
    assert count_of(page.text, "pending") == 1
    assert count_of(page.text, "canceled") == 1
    for status in ("running", "completed", "failed"):
        assert count_of(page.text, status) == 0
    assert f'<a class="run-link" href="/runs/{first.id}">' in page.text
    assert 'span class="status status-canceled" data-status="canceled"' in page.text
    assert 'form id="filters"' in page.text


async def test_index_without_runs_says_so(backend: Any) -> None:
    async with dashboard_client(backend) as client:
        page = await client.get("/")
    assert page.status_code == 200
    assert 'id="no-runs"' in page.text
    assert run_ids(page.text) == []


async def test_cursor_pages_walk_forward_and_back(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    for number in range(30):
        await ow.run(double_it, number)
    newest_first = await _ids(ow)  # runs made in one millisecond are ordered by id
    assert len(newest_first) == 30
    async with dashboard_client(backend) as client:
        first = await client.get("/")
        assert run_ids(first.text) == newest_first[:25]
        assert link(first.text, "page-newer") is None
        older = link(first.text, "page-older")
        assert older is not None and "after=" in older

        second = await client.get(older)
        assert run_ids(second.text) == newest_first[25:]
        assert link(second.text, "page-older") is None
        newer = link(second.text, "page-newer")
        assert newer is not None and "before=" in newer

        back = await client.get(newer)
        assert run_ids(back.text) == newest_first[:25]

        bigger = await client.get("/?limit=50")
        assert run_ids(bigger.text) == newest_first
        odd_size = await client.get("/?limit=7")  # not offered: the default size
        assert len(run_ids(odd_size.text)) == 25

        all_pending = await client.get("/?limit=100&status=pending")
        assert len(run_ids(all_pending.text)) == 30

        broken = await client.get("/?after=not-a-cursor")
        assert broken.status_code == 400
        assert "invalid pagination cursor" in broken.text


async def test_filters_by_status_and_workflow(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    greeting = await ow.run(greet, {"name": "Ada"})
    doubled = await ow.run(double_it, 2)
    canceled = await ow.run(double_it, 3)
    await ow.cancel(canceled.id)
    async with dashboard_client(backend) as client:
        by_name = await client.get("/", params={"workflow": "double-it"})
        assert run_ids(by_name.text) == await _ids(ow, workflow_name="double-it")
        assert set(run_ids(by_name.text)) == {canceled.id, doubled.id}
        assert 'name="workflow" value="double-it"' in by_name.text

        by_status = await client.get("/", params={"status": "pending"})
        assert run_ids(by_status.text) == await _ids(ow, status="pending")
        assert set(run_ids(by_status.text)) == {doubled.id, greeting.id}
        assert '<option value="pending" selected>' in by_status.text

        both = await client.get("/", params={"status": "canceled", "workflow": "double-it"})
        assert run_ids(both.text) == [canceled.id]

        nothing = await client.get("/", params={"workflow": "no-such-workflow"})
        assert run_ids(nothing.text) == []
        assert "No runs match" in nothing.text

        # Filters stay on the page links.
        for number in range(25):
            await ow.run(double_it, number)
        expected = await _ids(ow, workflow_name="double-it")
        paged = await client.get("/", params={"workflow": "double-it", "limit": "25"})
        assert run_ids(paged.text) == expected[:25]
        older = link(paged.text, "page-older")
        assert older is not None and "workflow=double-it" in older
        rest = await client.get(older)
        assert run_ids(rest.text) == expected[25:]

        unknown = await client.get("/", params={"status": "bogus"})
        assert unknown.status_code == 400


async def test_completed_run_detail_shows_output_and_steps(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(greet, {"name": "Ada"}, idempotency_key="greet:ada")
    async with running_worker(backend, [greet]):
        await wait_for_status(backend, handle.id, "completed")
    async with dashboard_client(backend) as client:
        page = await client.get(f"/runs/{handle.id}")
    assert page.status_code == 200
    text = page.text
    assert run_status(text) == "completed"
    assert 'data-finished="true"' in text
    output = section(text, "run-output")
    assert output is not None and "Hello, Ada!" in html.unescape(output)
    run_input = section(text, "run-input")
    assert run_input is not None and '"name": "Ada"' in html.unescape(run_input)
    assert 'id="run-error"' not in text
    assert 'id="cancel-run"' not in text and 'id="retry-run"' not in text
    assert '<tr data-step-name="fetch-greeting"' in text
    assert "greet:ada" in text  # the idempotency key
    assert "function" in text  # the step kind


async def test_failed_run_shows_its_error_and_offers_retry(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(explode)
    async with running_worker(backend, [explode]):
        await wait_for_status(backend, handle.id, "failed")
    async with dashboard_client(backend) as client:
        page = await client.get(f"/runs/{handle.id}")
    assert run_status(page.text) == "failed"
    error = section(page.text, "run-error")
    assert error is not None and "boom" in error
    assert 'form id="retry-run"' in page.text
    assert re.search(r'form id="retry-run".*?<button type="submit"', page.text, re.DOTALL)
    assert 'id="cancel-run"' not in page.text
    assert 'id="run-output"' not in page.text
    assert '<tr data-step-name="fail-once"' in page.text
    assert 'data-status="failed"' in page.text


async def test_parent_and_child_runs_link_to_each_other(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    parent = await ow.run(parent_flow)
    async with running_worker(backend, [parent_flow, double_it]):
        await wait_for_status(backend, parent.id, "completed", timeout=10)
    page = await ow.list_runs(workflow_name="double-it")
    child_id = page.data[0].id
    async with dashboard_client(backend) as client:
        parent_page = await client.get(f"/runs/{parent.id}")
        assert f'<a class="child-run-link" href="/runs/{child_id}">' in parent_page.text
        assert '<tr data-step-name="child"' in parent_page.text

        child_page = await client.get(f"/runs/{child_id}")
        assert f'<a class="parent-run-link" href="/runs/{parent.id}">' in child_page.text
        assert "parent-flow" in child_page.text

        index = await client.get("/")
        row = index.text[index.text.index(f'data-run-id="{child_id}"') :]
        row = row[: row.index("</tr>")]
        assert f'href="/runs/{parent.id}"' in row


async def test_a_chain_of_continued_runs_links_both_ways(backend: Any) -> None:
    from tests.worker.test_continue_as_new import countdown

    ow = OpenWorkflow(backend)
    first = await ow.run(countdown, 2)
    async with running_worker(backend, [countdown]):
        assert await first.result(timeout=30) == 3
    successor = (await ow.list_runs(workflow_name="countdown")).data[0]
    assert successor.id != first.id
    async with dashboard_client(backend) as client:
        first_page = await client.get(f"/runs/{first.id}")
        assert f'<a class="continued-as-link" href="/runs/{successor.id}">' in first_page.text
        assert 'id="run-continued-from"' not in first_page.text
        next_page = await client.get(f"/runs/{successor.id}")
        assert f'<a class="continued-from-link" href="/runs/{first.id}">' in next_page.text
        assert 'id="run-continued-as"' not in next_page.text


async def test_unknown_pages_and_runs_are_404(backend: Any) -> None:
    async with dashboard_client(backend) as client:
        missing_run = await client.get("/runs/00000000-0000-0000-0000-00000000abcd")
        assert missing_run.status_code == 404
        assert "There is no run" in missing_run.text
        assert "<!doctype html>" in missing_run.text

        nowhere = await client.get("/no/such/page")
        assert nowhere.status_code == 404
        assert 'data-error-status="404"' in nowhere.text

        api = await client.get("/api/runs/nope")
        assert api.status_code == 404
        assert api.json() == {"error": "no run 'nope'"}


async def test_status_api_reports_progress(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(greet, {"name": "Ada"})
    async with dashboard_client(backend) as client:
        pending = await client.get(f"/api/runs/{handle.id}")
        assert pending.status_code == 200
        assert pending.json()["status"] == "pending"
        assert pending.json()["finished"] is False
        assert pending.headers["cache-control"] == "no-store"
        async with running_worker(backend, [greet]):
            await wait_for_status(backend, handle.id, "completed")
        done = (await client.get(f"/api/runs/{handle.id}")).json()
    assert done["status"] == "completed"
    assert done["finished"] is True
    assert done["attempts"] == 1


async def test_static_files_are_served(backend: Any) -> None:
    async with dashboard_client(backend) as client:
        page = await client.get("/")
        css_url = re.search(r'href="(/static/dashboard\.css\?v=[0-9a-f]+)"', page.text)
        js_url = re.search(r'src="(/static/dashboard\.js\?v=[0-9a-f]+)"', page.text)
        assert css_url and js_url
        css = await client.get(css_url.group(1))
        js = await client.get(js_url.group(1))
    assert css.status_code == 200 and "prefers-color-scheme: dark" in css.text
    assert js.status_code == 200 and "run-status" in js.text
