"""The workflows page: pausing and resuming workflows from the dashboard, and where it shows.

The route tests drive the app in-process on every backend; the browser test
clicks Pause and Resume in a real headless Chromium against real ``ow
dashboard`` and ``ow worker start`` processes.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from openworkflow import OpenWorkflow, SyncOpenWorkflow
from openworkflow.dashboard.rendering import segment
from tests.cli.helpers import clean_env, ow
from tests.dashboard.helpers import dashboard_client, greet, section
from tests.dashboard.test_browser import (  # noqa: F401 - `project` is a fixture
    CHROMIUM,
    CHROMIUM_ARGS,
    _browser_or_skip,
    project,
)

ODD_NAMES = ["with space", "a/b/pause", "ünïcødé ✓ 工作流", "100% #1?x=y&z", "trailing/"]


def _states(page: str) -> dict[str, str]:
    """Each listed workflow's state (``active`` or ``paused``), by name."""
    rows = re.findall(r'<tr data-workflow="([^"]*)" data-state="(active|paused)"', page)
    return {html.unescape(name): state for name, state in rows}


def _form_actions(page: str, verb: str) -> list[str]:
    """The (unescaped) actions of the page's Pause or Resume forms."""
    found = re.findall(rf'<form class="{verb}-workflow" method="post" action="([^"]+)"', page)
    return [html.unescape(action) for action in found]


async def _paused_names(ow_client: OpenWorkflow) -> list[str]:
    return [item.workflow_name for item in await ow_client.paused_workflows()]


async def test_page_lists_known_workflows_and_paused_names(backend: Any) -> None:
    ow_client = OpenWorkflow(backend)
    for _ in range(3):
        await ow_client.run(greet, {"name": "queued"})
    await ow_client.pause_workflow("greet")
    await ow_client.pause_workflow("elsewhere")  # paused, but not in this dashboard's project
    async with dashboard_client(backend) as client:
        index = await client.get("/")
        page = await client.get("/workflows")
    assert 'href="/workflows" id="workflows-link"' in index.text
    assert page.status_code == 200
    assert _states(page.text) == {
        "double-it": "active",
        "elsewhere": "paused",
        "explode": "active",
        "greet": "paused",
        "parent-flow": "active",
    }
    greet_row = page.text.split('data-workflow="greet"')[1].split("</tr>")[0]
    assert "paused</span> since <time" in greet_row
    assert "3 runs waiting" in greet_row
    assert 'href="/?workflow=greet&amp;status=pending"' in greet_row
    elsewhere_row = page.text.split('data-workflow="elsewhere"')[1].split("</tr>")[0]
    assert "not in this project" in elsewhere_row
    assert _form_actions(page.text, "resume") == [
        "/workflows/elsewhere/resume",
        "/workflows/greet/resume",
    ]
    assert len(_form_actions(page.text, "pause")) == 3


async def test_pause_and_resume_through_the_forms(backend: Any) -> None:
    ow_client = OpenWorkflow(backend)
    async with dashboard_client(backend) as client:
        paused = await client.post("/workflows/greet/pause")
        assert paused.status_code == 303
        assert paused.headers["location"] == "/workflows?paused=greet"
        assert await _paused_names(ow_client) == ["greet"]
        shown = await client.get(paused.headers["location"])
        assert _states(shown.text)["greet"] == "paused"
        assert "paused: workers take none of its runs" in (
            section(shown.text, "workflow-message") or ""
        )
        again = await client.post("/workflows/greet/pause")  # idempotent
        assert again.status_code == 303
        resumed = await client.post("/workflows/greet/resume")
        assert resumed.headers["location"] == "/workflows?resumed=greet"
        assert await _paused_names(ow_client) == []
        shown = await client.get(resumed.headers["location"])
        assert _states(shown.text)["greet"] == "active"
        assert "resumed" in (section(shown.text, "workflow-message") or "")


async def test_pause_and_resume_refuse_cross_site_requests(backend: Any) -> None:
    ow_client = OpenWorkflow(backend)
    async with dashboard_client(backend) as client:
        no_token = await client.post("/workflows/greet/pause", token=False)
        forged = await client.post("/workflows/greet/pause", token="0" * 64)
        other_site = await client.post(
            "/workflows/greet/pause", headers={"Origin": "https://evil.example"}
        )
        as_get = await client.get("/workflows/greet/pause")
        assert await _paused_names(ow_client) == []
        await ow_client.pause_workflow("greet")
        resume_no_token = await client.post("/workflows/greet/resume", token=False)
    for refused in (no_token, forged, other_site, resume_no_token):
        assert refused.status_code == 403, refused.text
        assert "Request refused" in refused.text
    assert as_get.status_code == 405
    assert await _paused_names(ow_client) == ["greet"]


async def test_odd_names_round_trip_through_the_urls(backend: Any) -> None:
    ow_client = OpenWorkflow(backend)
    async with dashboard_client(backend, workflows=[]) as client:
        for name in ODD_NAMES:
            response = await client.post(f"/workflows/{segment(name)}/pause")
            assert response.status_code == 303, (name, response.text)
        assert sorted(await _paused_names(ow_client)) == sorted(ODD_NAMES)
        page = await client.get("/workflows")
        assert _states(page.text) == dict.fromkeys(ODD_NAMES, "paused")
        for action in _form_actions(page.text, "resume"):  # the page's own URLs
            response = await client.post(action)
            assert response.status_code == 303, (action, response.text)
        assert await _paused_names(ow_client) == []
        empty = await client.post("/workflows//pause")
    assert empty.status_code == 400
    assert await _paused_names(ow_client) == []


async def test_run_list_marks_runs_of_paused_workflows(backend: Any) -> None:
    ow_client = OpenWorkflow(backend)
    waiting = await ow_client.run(greet, {"name": "Ada"})
    other = await ow_client.run("explode")
    await ow_client.pause_workflow("greet")
    async with dashboard_client(backend) as client:
        everything = await client.get("/")
        only_greet = await client.get("/", params={"workflow": "greet"})
        only_explode = await client.get("/", params={"workflow": "explode"})
    rows = {
        run_id: row
        for run_id, row in re.findall(
            r'<tr data-run-id="([^"]+)">(.*?)</tr>', everything.text, re.DOTALL
        )
    }
    assert 'class="paused-badge"' in rows[waiting.id]
    assert 'class="paused-badge"' not in rows[other.id]
    banner = section(only_greet.text, "workflow-paused") or ""
    assert "is paused since" in banner
    assert "ow workflows resume greet" in banner
    assert _form_actions(only_greet.text, "resume") == ["/workflows/greet/resume"]
    assert 'id="workflow-paused"' not in only_explode.text
    assert 'id="workflow-paused"' not in everything.text


async def test_run_page_says_why_a_pending_run_does_not_start(backend: Any) -> None:
    ow_client = OpenWorkflow(backend)
    urgent = await ow_client.run(greet, {"name": "Ada"}, priority=7)
    plain = await ow_client.run(greet, {"name": "Bob"})
    await ow_client.pause_workflow("with space")
    spaced = await ow_client.run("with space")
    await ow_client.pause_workflow("greet")
    async with dashboard_client(backend) as client:
        urgent_page = (await client.get(f"/runs/{urgent.id}")).text
        plain_page = (await client.get(f"/runs/{plain.id}")).text
        spaced_page = (await client.get(f"/runs/{spaced.id}")).text
        await ow_client.resume_workflow("greet")
        resumed_page = (await client.get(f"/runs/{urgent.id}")).text
    notice = html.unescape(section(urgent_page, "run-paused") or "")
    assert "Not starting: workflow <strong>greet</strong> is paused" in notice
    assert "ow workflows resume greet" in notice
    assert _form_actions(urgent_page, "resume") == ["/workflows/greet/resume"]
    assert re.search(r'id="run-priority">7</dd>', urgent_page)
    assert 'id="run-priority"' not in plain_page  # priority 0 is not worth a line
    assert "ow workflows resume 'with space'" in html.unescape(spaced_page)
    assert 'id="run-paused"' not in resumed_page


async def test_metrics_show_one_gauge_per_paused_workflow(backend: Any) -> None:
    ow_client = OpenWorkflow(backend)
    await ow_client.pause_workflow("greet")
    await ow_client.pause_workflow("with space")
    async with dashboard_client(backend) as client:
        paused_text = (await client.get("/metrics")).text
        await ow_client.resume_workflow("greet")
        await ow_client.resume_workflow("with space")
        active_text = (await client.get("/metrics")).text
    families = {family.name: family for family in text_string_to_metric_families(paused_text)}
    gauge = families["openworkflow_workflow_paused"]
    assert gauge.type == "gauge"
    assert {sample.labels["workflow"]: sample.value for sample in gauge.samples} == {
        "greet": 1.0,
        "with space": 1.0,
    }
    after = {family.name for family in text_string_to_metric_families(active_text)}
    assert "openworkflow_workflow_paused" not in after


def _paused_in_project(folder: Path) -> dict[str, Any]:
    """What ``ow workflows list --json`` says, by workflow name."""
    listed = ow(folder, "workflows", "list", "--json", env=clean_env())
    assert listed.returncode == 0, listed.stderr
    return {item["name"]: item["paused_at"] for item in json.loads(listed.stdout)}


@pytest.mark.slow
def test_pause_and_resume_in_a_browser(
    project: tuple[str, SyncOpenWorkflow],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    sync_playwright = _browser_or_skip()
    url, client = project
    greet_row = 'tr[data-workflow="greet"]'
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url + "/")
        page.click("#workflows-link")
        page.wait_for_selector(f'{greet_row}[data-state="active"]')

        page.click(f"{greet_row} form.pause-workflow button")
        page.wait_for_selector(f'{greet_row}[data-state="paused"]')
        assert "paused" in page.inner_text("#workflow-message")
        assert _paused_in_project(tmp_path)["greet"] is not None

        # A run started now waits, and its page says why and offers Resume.
        waiting = client.run("greet", {"name": "Paused"})
        page.goto(f"{url}/runs/{waiting.id}")
        assert "Not starting" in page.inner_text("#run-paused")
        assert page.get_attribute("#run-status", "data-status") == "pending"
        page.click("#run-paused form.resume-workflow button")
        page.wait_for_selector(f'{greet_row}[data-state="active"]')
        assert "resumed" in page.inner_text("#workflow-message")
        assert _paused_in_project(tmp_path)["greet"] is None
        assert waiting.result(timeout="20s") == {"greeting": "Hello, Paused!"}
        browser.close()
