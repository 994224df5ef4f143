"""Bulk cancel and retry from the runs list: selection, all matching, confirmation, CSRF."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any

import httpx

from openworkflow import OpenWorkflow
from openworkflow.dashboard.bulk_actions import MAX_SELECTED
from tests.dashboard.helpers import SAME_ORIGIN, DashboardClient, dashboard_client, run_ids
from tests.fixtures.clock import Clock
from tests.worker.helpers import get_run


async def _post(
    client: DashboardClient, path: str, fields: list[tuple[str, str]], *, token: bool = True
) -> httpx.Response:
    if token:
        fields = [*fields, ("csrf_token", await client.token())]
    return await client.http.post(path, data=_form(fields), headers=SAME_ORIGIN)


def _form(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Form fields as httpx takes them: a list of values per name, in order."""
    form: dict[str, list[str]] = {}
    for name, value in pairs:
        form.setdefault(name, []).append(value)
    return form


def _count(page: str) -> int:
    match = re.search(r'id="bulk-count" data-count="(\d+)"', page)
    assert match, "no count on the confirmation page"
    return int(match.group(1))


def _hidden(page: str) -> list[tuple[str, str]]:
    """The confirmation form's fields, to post them again as the Confirm button does."""
    form = page[page.index('<form id="bulk-confirm"') :]
    form = form[: form.index("</form>")]
    pairs = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form)
    return [(name, html.unescape(value)) for name, value in pairs]


async def _statuses(backend: Any, ids: list[str]) -> list[str]:
    return [(await get_run(backend, run_id)).status for run_id in ids]


async def test_the_list_offers_checkboxes_and_the_bulk_buttons(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    run_id = (await ow.run("greet", {"name": "x"}, tags={"team": "<b>"})).id
    async with dashboard_client(backend) as client:
        page = (await client.get("/", params={"tag": "team=<b>", "workflow": "greet"})).text
    assert run_ids(page) == [run_id]
    assert f'name="run_id" value="{run_id}"' in page
    for button in ("bulk-cancel-selected", "bulk-retry-selected", "bulk-cancel-all"):
        assert f'id="{button}"' in page
    assert '<input type="hidden" name="tag" value="team=&lt;b&gt;">' in page  # escaped
    assert '<input type="hidden" name="workflow" value="greet">' in page


async def test_cancel_selected_runs_after_the_confirmation(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    ids = [(await ow.run("greet", {"name": str(n)})).id for n in range(4)]
    chosen = ids[:3]
    async with dashboard_client(backend) as client:
        fields = [("scope", "selected"), *[("run_id", run_id) for run_id in chosen]]
        asked = await _post(client, "/runs/bulk/cancel", fields)
        assert asked.status_code == 200, asked.text
        assert _count(asked.text) == 3
        assert await _statuses(backend, ids) == ["pending"] * 4  # nothing done yet
        await ow.cancel(chosen[0])  # meanwhile: skipped, not an error
        done = await client.http.post(
            "/runs/bulk/cancel", data=_form(_hidden(asked.text)), headers=SAME_ORIGIN
        )
        assert done.status_code == 303
        assert done.headers["location"] == "/?bulk=cancel&done=2&skipped=1"
        listed = await client.get(done.headers["location"])
    assert "Canceled 2 runs (1 skipped)." in listed.text
    assert await _statuses(backend, ids) == ["canceled"] * 3 + ["pending"]


async def test_retry_all_matching_the_filter(backend: Any, clock: Clock) -> None:
    ow = OpenWorkflow(backend)
    mine = [(await ow.run("greet", {"name": str(n)}, tags={"team": "a"})).id for n in range(3)]
    theirs = (await ow.run("greet", {"name": "b"}, tags={"team": "b"})).id
    for run_id in [*mine, theirs]:
        await ow.cancel(run_id)
    await ow.retry(mine[0])  # pending again: not retried twice
    async with dashboard_client(backend) as client:
        filter_fields = [("workflow", "greet"), ("tag", "team=a")]
        asked = await _post(client, "/runs/bulk/retry", [("scope", "all"), *filter_fields])
        assert asked.status_code == 200, asked.text
        assert _count(asked.text) == 2  # the failed or canceled ones of team a
        assert "failed, canceled" in asked.text
        clock.advance(timedelta(seconds=1))
        late = (await ow.run("greet", {"name": "late"}, tags={"team": "a"})).id
        await ow.cancel(late)  # started after the count: left alone
        done = await client.http.post(
            "/runs/bulk/retry", data=_form(_hidden(asked.text)), headers=SAME_ORIGIN
        )
        assert done.status_code == 303
        location = done.headers["location"]
        assert location.startswith("/?workflow=greet&tag=team%3Da&bulk=retry&done=")
        listed = await client.get(location)
    assert "Retried 2 runs." in listed.text
    assert await _statuses(backend, [*mine, theirs, late]) == ["pending"] * 3 + ["canceled"] * 2


async def test_nothing_matching_shows_no_confirm_button(backend: Any) -> None:
    async with dashboard_client(backend) as client:
        asked = await _post(client, "/runs/bulk/cancel", [("scope", "all"), ("workflow", "nobody")])
    assert asked.status_code == 200
    assert 'id="bulk-none"' in asked.text
    assert 'id="bulk-confirm"' not in asked.text


async def test_refused_without_token_or_from_another_site(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    run_id = (await ow.run("greet", {"name": "x"})).id
    fields = [("scope", "selected"), ("run_id", run_id), ("confirm", "yes")]
    async with dashboard_client(backend) as client:
        missing = await _post(client, "/runs/bulk/cancel", fields, token=False)
        token = await client.token()
        foreign = await client.http.post(
            "/runs/bulk/cancel",
            data=_form([*fields, ("csrf_token", token)]),
            headers={"Origin": "http://evil.example"},
        )
    assert missing.status_code == 403
    assert foreign.status_code == 403
    assert await _statuses(backend, [run_id]) == ["pending"]


async def test_bad_requests_are_400(backend: Any) -> None:
    async with dashboard_client(backend) as client:
        nothing = await _post(client, "/runs/bulk/cancel", [("scope", "selected")])
        too_many = await _post(
            client,
            "/runs/bulk/retry",
            [("scope", "selected"), *[("run_id", f"r-{n}") for n in range(MAX_SELECTED + 1)]],
        )
        bad_scope = await _post(client, "/runs/bulk/cancel", [("scope", "everything")])
        bad_status = await _post(client, "/runs/bulk/cancel", [("scope", "all"), ("status", "x")])
    assert nothing.status_code == 400 and "No runs were selected" in nothing.text
    assert too_many.status_code == 400 and f"At most {MAX_SELECTED}" in too_many.text
    assert bad_scope.status_code == 400
    assert bad_status.status_code == 400


async def test_the_message_takes_only_numbers(backend: Any) -> None:
    async with dashboard_client(backend) as client:
        forged = await client.get("/", params={"bulk": "cancel", "done": "<b>", "skipped": "1"})
        other = await client.get("/", params={"bulk": "delete", "done": "1", "skipped": "0"})
    assert 'id="bulk-message"' not in forged.text
    assert 'id="bulk-message"' not in other.text
