"""The schedules page: stored schedules with their next and last ticks, and their buttons.

The route tests drive the app in-process on every backend, with schedules
stored the way a worker stores them (``upsert_schedules``) and ticks served the
way a worker serves them (``create_scheduled_run``). The browser test clicks
Trigger now in a real headless Chromium against real ``ow dashboard`` and ``ow
worker start`` processes.
"""

from __future__ import annotations

import asyncio
import html
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from openworkflow import OpenWorkflow, SyncOpenWorkflow
from openworkflow.core import clock
from openworkflow.core.schedule import Schedule, next_tick
from openworkflow.core.schedule_store import ScheduleDefinition, ScheduledRunParams
from openworkflow.dashboard.rendering import segment
from openworkflow.sqlite import SqliteBackend
from tests.dashboard.helpers import dashboard_client, section
from tests.dashboard.test_browser import (  # noqa: F401 - `project` is a fixture
    CHROMIUM,
    CHROMIUM_ARGS,
    _browser_or_skip,
    project,
)
from tests.fixtures.postgres import TEST_SCHEMA

ODD_NAMES = ["with space", "a/b/pause", "ünïcødé ✓ 工作流", "100% #1?x=y&z", "trailing/", "x:y"]


def definition(name: str, cron: str = "0 0 1 1 *", **options: Any) -> ScheduleDefinition:
    """A schedule of the dashboard tests' ``greet`` workflow (yearly unless told)."""
    return ScheduleDefinition(
        name=name,
        workflow_name="greet",
        version=None,
        schedule=Schedule(cron, **options),
        input={"name": "Cron"},
    )


async def store(backend: Any, *definitions: ScheduleDefinition) -> None:
    await backend.upsert_schedules(list(definitions))


async def seen_ago(backend: Any, backend_kind: str, name: str, age: timedelta) -> None:
    """Make a schedule look first stored ``age`` ago (no worker served its ticks since).

    There is no API to back-date a schedule, so this writes the column directly.
    """
    seen = clock.now() - age
    if backend_kind == "postgres":
        pool = await backend._db.pool()
        async with pool.connection() as connection:
            await connection.execute(
                f'UPDATE "{TEST_SCHEMA}"."schedules" SET "first_seen_at" = %s '
                'WHERE "namespace_id" = %s AND "name" = %s',
                (seen, backend.namespace_id, name),
            )
        return

    def write(connection: Any) -> None:
        connection.execute(
            'UPDATE "schedules" SET "first_seen_at" = ? WHERE "namespace_id" = ? AND "name" = ?',
            (clock.to_iso(seen), backend.namespace_id, name),
        )
        connection.commit()

    await backend._db.run(write)


def rows_of(page: str) -> dict[str, str]:
    """Each listed schedule's table row (raw HTML), by name."""
    found = re.findall(r'<tr data-schedule="([^"]*)"(.*?)</tr>', page, re.DOTALL)
    return {html.unescape(name): row for name, row in found}


def state_of(row: str) -> str:
    match = re.match(r' data-state="(active|paused)"', row)
    assert match, row
    return match.group(1)


def form_actions(page: str, verb: str) -> list[str]:
    """The (unescaped) actions of the page's Pause, Resume or Trigger forms."""
    found = re.findall(rf'<form class="{verb}-schedule" method="post" action="([^"]+)"', page)
    return [html.unescape(action) for action in found]


async def paused_names(ow_client: OpenWorkflow) -> list[str]:
    snapshot = await ow_client.list_schedules()
    return sorted(item.name for item in snapshot.schedules if item.paused_at is not None)


async def test_page_lists_next_and_last_ticks(backend: Any, backend_kind: str) -> None:
    ow_client = OpenWorkflow(backend)
    await store(
        backend,
        definition("every-five", "*/5 * * * *"),
        definition("paris-morning", "30 8 * * *", timezone="Europe/Paris"),
        definition("late", "* * * * *"),
        definition("held"),
    )
    served = next_tick(Schedule("*/5 * * * *"), clock.now())
    params = ScheduledRunParams(schedule_name="every-five", tick=served)
    result = await backend.create_scheduled_run(params)
    assert result.outcome == "created" and result.run is not None
    await seen_ago(backend, backend_kind, "late", timedelta(minutes=7))
    await ow_client.pause_schedule("held")
    await ow_client.pause_workflow("greet")  # its ticks then pass without a run
    async with dashboard_client(backend) as client:
        index = await client.get("/")
        page = await client.get("/schedules")
    assert 'href="/schedules" id="schedules-link"' in index.text
    assert page.status_code == 200
    rows = rows_of(page.text)
    assert list(rows) == ["every-five", "held", "late", "paris-morning"]

    five = rows["every-five"]
    assert "Every fifth minute" in five  # cronsim's explanation
    assert 'href="/?workflow=greet"' in five
    assert ">workflow paused</a>" in five
    upcoming = served + timedelta(minutes=5)
    assert upcoming.strftime("%Y-%m-%d %H:%M UTC") in five
    assert re.search(r'class="muted tick-relative">in ([5-9]|10) min<', five)
    assert served.strftime("%Y-%m-%d %H:%M UTC") in five.split('class="last-tick"')[1]
    assert f'href="/runs/{result.run.id}"' in five
    assert 'data-status="pending"' in five  # the last run's status
    assert state_of(five) == "active"

    paris = rows["paris-morning"]
    assert "Europe/Paris" in paris
    local = next_tick(Schedule("30 8 * * *", timezone="Europe/Paris"), clock.now())
    paris_text = local.astimezone(ZoneInfo("Europe/Paris")).strftime("%Y-%m-%d 08:30 %Z")
    assert paris_text in paris
    assert "none yet" in paris  # no tick served

    late = rows["late"]
    assert 'data-overdue="true"' in late
    assert re.search(r">overdue by [67] min<", late)
    assert 'data-overdue="true"' not in five + paris

    held = rows["held"]
    assert state_of(held) == "paused"
    assert "paused</span> since <time" in held
    assert "— (paused)" in held
    assert form_actions(page.text, "resume") == ["/schedules/held/resume"]
    assert len(form_actions(page.text, "pause")) == 3
    assert len(form_actions(page.text, "trigger")) == 4


async def test_empty_page_says_how_schedules_get_there(backend: Any) -> None:
    async with dashboard_client(backend) as client:
        page = await client.get("/schedules")
    assert page.status_code == 200
    assert 'id="no-schedules"' in page.text
    assert rows_of(page.text) == {}


async def test_pause_resume_and_trigger_through_the_forms(backend: Any) -> None:
    ow_client = OpenWorkflow(backend)
    await store(backend, definition("nightly", "0 2 * * *"))
    async with dashboard_client(backend) as client:
        paused = await client.post("/schedules/nightly/pause")
        assert paused.status_code == 303
        assert paused.headers["location"] == "/schedules?paused=nightly"
        assert await paused_names(ow_client) == ["nightly"]
        shown = await client.get(paused.headers["location"])
        assert state_of(rows_of(shown.text)["nightly"]) == "paused"
        assert "paused: its ticks start no run" in (section(shown.text, "schedule-message") or "")
        assert (await client.post("/schedules/nightly/pause")).status_code == 303  # idempotent

        resumed = await client.post("/schedules/nightly/resume")
        assert resumed.headers["location"] == "/schedules?resumed=nightly"
        assert await paused_names(ow_client) == []
        shown = await client.get(resumed.headers["location"])
        assert state_of(rows_of(shown.text)["nightly"]) == "active"

        triggered = await client.post("/schedules/nightly/trigger")
        assert triggered.status_code == 303
        run_id = triggered.headers["location"].removeprefix("/runs/")
        run = await ow_client.get_run(run_id)
        assert run is not None
        assert (run.workflow_name, run.input, run.scheduled_at) == ("greet", {"name": "Cron"}, None)
        run_page = await client.get(triggered.headers["location"])
        assert 'id="run-scheduled"' not in run_page.text  # a trigger serves no tick

        missing = [await client.post(f"/schedules/nope/{verb}") for verb in ("pause", "trigger")]
    for response in missing:
        assert response.status_code == 404
        assert "no stored schedule named &#39;nope&#39;" in response.text


async def test_actions_refuse_cross_site_requests(backend: Any) -> None:
    ow_client = OpenWorkflow(backend)
    await store(backend, definition("nightly"))
    async with dashboard_client(backend) as client:
        refused = []
        for verb in ("pause", "trigger"):
            path = f"/schedules/nightly/{verb}"
            refused.append(await client.post(path, token=False))
            refused.append(await client.post(path, token="0" * 64))
            refused.append(await client.post(path, headers={"Origin": "https://evil.example"}))
        as_get = await client.get("/schedules/nightly/trigger")
        assert await paused_names(ow_client) == []
        await ow_client.pause_schedule("nightly")
        refused.append(await client.post("/schedules/nightly/resume", token=False))
    for response in refused:
        assert response.status_code == 403, response.text
        assert "Request refused" in response.text
    assert as_get.status_code == 405
    assert await paused_names(ow_client) == ["nightly"]
    assert (await ow_client.list_runs()).data == []  # no trigger got through


async def test_odd_names_round_trip_through_the_urls(backend: Any) -> None:
    ow_client = OpenWorkflow(backend)
    await store(backend, *(definition(name) for name in ODD_NAMES))
    async with dashboard_client(backend, workflows=[]) as client:
        page = await client.get("/schedules")
        assert sorted(rows_of(page.text)) == sorted(ODD_NAMES)
        for action in form_actions(page.text, "pause"):  # the page's own URLs
            response = await client.post(action)
            assert response.status_code == 303, (action, response.text)
        assert await paused_names(ow_client) == sorted(ODD_NAMES)
        page = await client.get("/schedules")
        assert {state_of(row) for row in rows_of(page.text).values()} == {"paused"}
        for action in form_actions(page.text, "resume"):
            assert (await client.post(action)).status_code == 303, action
        assert await paused_names(ow_client) == []
        triggered = await client.post(f"/schedules/{segment('a/b/pause')}/trigger")
        assert triggered.status_code == 303
        empty = await client.post("/schedules//pause")
    assert empty.status_code == 400
    assert len((await ow_client.list_runs()).data) == 1


async def test_run_page_names_the_tick_and_the_schedule(backend: Any) -> None:
    long_name = "quarterly-" + "é" * 300  # too long for the tick's key: cut and hashed there
    await store(backend, definition("x:y"), definition(long_name))
    tick = datetime(2026, 3, 8, 7, 30, tzinfo=UTC)
    runs = {}
    for name in ("x:y", long_name):
        params = ScheduledRunParams(schedule_name=name, tick=tick)
        result = await backend.create_scheduled_run(params)
        assert result.run is not None, result
        runs[name] = result.run.id
    async with dashboard_client(backend) as client:
        pages = {name: (await client.get(f"/runs/{run_id}")).text for name, run_id in runs.items()}
    for name, page in pages.items():
        notice = html.unescape(section(page, "run-scheduled") or "")
        assert notice.startswith('Scheduled run: tick <time datetime="2026-03-08T07:30:00.000Z"')
        assert f'of schedule <a class="schedule-link" href="/schedules"><strong>{name}<' in (notice)


def _store_in_project(folder: Path) -> None:
    """Store a yearly schedule of ``greet`` in the project's database, as a worker would."""

    async def write() -> None:
        backend = SqliteBackend(str(folder / "ow.db"))
        try:
            await store(backend, definition("new-year", timezone="Europe/Paris"))
        finally:
            await backend.stop()

    asyncio.run(write())


@pytest.mark.slow
def test_trigger_now_in_a_browser(
    project: tuple[str, SyncOpenWorkflow],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    sync_playwright = _browser_or_skip()
    url, client = project
    _store_in_project(tmp_path)
    row = 'tr[data-schedule="new-year"]'
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url + "/")
        page.click("#schedules-link")
        page.wait_for_selector(f'{row}[data-state="active"]')
        assert "2027-01-01 00:00 CET" in page.inner_text(f"{row} .next-tick")
        assert "none yet" in page.inner_text(f"{row} .last-tick")

        page.click(f"{row} form.trigger-schedule button")
        page.wait_for_url(re.compile(r".*/runs/[^/]+$"))
        run_id = page.url.rsplit("/", 1)[1]
        page.wait_for_selector('#run-status[data-status="completed"]', timeout=20_000)
        browser.close()
    finished = client.get_run(run_id)
    assert finished is not None
    assert finished.output == {"greeting": "Hello, Cron!"}
