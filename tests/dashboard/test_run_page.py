"""The run page tells the run's true state (issue 14, item 6), and the run search.

On every backend, with a real worker: a run that recovered after failed
attempts shows no error; a canceled one neither; a parked run says what it
waits for; a retry says "attempt n of N"; the first start and a true duration;
the steps timeline; and ``/search`` by id or id prefix.
"""

from __future__ import annotations

import asyncio
import html
import re
from collections import Counter
from typing import Any

from openworkflow import OpenWorkflow, RetryPolicy, RunInfo, Step, workflow
from openworkflow.dashboard.views import iso_time
from tests.dashboard.helpers import dashboard_client, double_it, greet, section
from tests.worker.helpers import running_worker, wait_for_parked, wait_for_run, wait_for_status

FAST_RETRY = RetryPolicy(initial_interval="10ms", maximum_attempts=5)
_calls: Counter[str] = Counter()


@workflow
async def recovers(step: Step, run: RunInfo) -> str:
    def charge() -> str:
        _calls[run.id] += 1
        if _calls[run.id] < 3:
            raise RuntimeError(f"card declined ({_calls[run.id]})")
        return "charged"

    return str(await step.run("charge", charge, retry_policy=FAST_RETRY))


@workflow
async def keeps_failing(step: Step) -> None:
    def charge() -> None:
        raise RuntimeError("card declined")

    await step.run("charge", charge, retry_policy=RetryPolicy(initial_interval="1h"))


@workflow(retry_policy=RetryPolicy(maximum_attempts=3, initial_interval="1h"))
async def flaky_workflow(step: Step) -> None:
    await step.run("ok", lambda: 1)
    raise RuntimeError("outside any step")


@workflow
async def waits_for_child(step: Step) -> object:
    return await step.run_workflow(waits_for_signal, None, name="approval")


@workflow
async def waits_for_signal(step: Step) -> object:
    return await step.wait_for_signal("manager-approved")


@workflow
async def fans_out(step: Step) -> list[str]:
    async def slow(text: str) -> str:
        await asyncio.sleep(0.3)  # longer than a quick step: its running attempt is recorded
        return text

    first = step.run("left", lambda: slow("l"))
    second = step.run("right", lambda: slow("r"))
    return list(await asyncio.gather(first, second))


WORKFLOWS = [recovers, keeps_failing, flaky_workflow, waits_for_child, waits_for_signal, fans_out]


def _common_prefix(ids: list[str]) -> str:
    """The longest string every id starts with."""
    first, last = min(ids), max(ids)
    length = next(
        (i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), len(first)
    )
    return first[:length]


def _bars(page: str, step_name: str) -> list[dict[str, str]]:
    """The timeline bars of one lane: their SVG attributes."""
    lane = re.search(rf'<g class="lane[^"]*" data-step-name="{re.escape(step_name)}">(.*?)</g>',
                     page, re.DOTALL)  # fmt: skip
    assert lane, f"no timeline lane for {step_name}"
    return [dict(re.findall(r'(\w[\w-]*)="([^"]*)"', rect)) for rect in
            re.findall(r"<rect ([^>]*)>", lane.group(1))]  # fmt: skip


def _meta(page: str, element_id: str) -> str:
    match = re.search(rf'<dd id="{element_id}">(.*?)</dd>', page, re.DOTALL)
    assert match, f"no #{element_id}"
    return html.unescape(re.sub(r"<[^>]+>", "", match.group(1))).strip()


async def test_a_run_that_recovered_shows_no_error_its_first_start_and_its_retries(
    backend: Any,
) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(recovers)
    async with running_worker(backend, WORKFLOWS):
        run = await wait_for_status(backend, handle.id, "completed", timeout=20)
    steps = (await ow.list_steps(handle.id)).data
    async with dashboard_client(backend, workflows=WORKFLOWS) as client:
        page = (await client.get(f"/runs/{handle.id}")).text
    assert 'id="run-error"' not in page and "card declined" not in page.split("Steps</h2>")[0]
    assert [bar["data-status"] for bar in _bars(page, "charge")] == [
        "failed",
        "failed",
        "completed",
    ]
    assert page.count('<line class="gap"') == 2  # the two retry backoffs
    first = min(step.started_at or step.created_at for step in steps)
    assert (
        run.started_at is not None and first < run.started_at
    )  # the row's started_at is the last resume
    started = re.search(r'<dd id="run-started"><time datetime="([^"]+)"', page)
    assert started and started.group(1) == iso_time(first)
    assert re.search(r'<dd id="run-resumed"><time datetime="([^"]+)"', page)
    assert _meta(page, "run-duration") != "—"
    assert 'id="run-waiting"' not in page
    assert "Worker passes" in page


async def test_a_run_retrying_a_step_says_so_and_once_canceled_shows_no_error(
    backend: Any,
) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(keeps_failing)
    async with running_worker(backend, WORKFLOWS):
        await wait_for_run(backend, handle.id, lambda r: r.status == "pending" and r.attempts == 1)
    async with dashboard_client(backend, workflows=WORKFLOWS) as client:
        page = (await client.get(f"/runs/{handle.id}")).text
        waiting = section(page, "run-waiting") or ""
        assert 'data-wait="retry"' in page
        assert "attempt 2" in waiting and "<code>charge</code>" in page
        assert "Last error" in page and 'id="run-error"' not in page
        assert 'id="run-available-at"' in page
        assert _meta(page, "run-started") != "—"  # cleared on the row; known from the step

        await ow.cancel(handle.id)
        canceled = (await client.get(f"/runs/{handle.id}")).text
    assert 'id="run-error"' not in canceled and 'id="run-waiting"' not in canceled
    assert _meta(canceled, "run-duration") != "—"


async def test_a_workflow_retry_counts_attempts_against_its_policy(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(flaky_workflow)
    async with running_worker(backend, WORKFLOWS):
        await wait_for_run(backend, handle.id, lambda r: r.status == "pending" and r.attempts == 1)
    async with dashboard_client(backend, workflows=WORKFLOWS) as client:
        known = (await client.get(f"/runs/{handle.id}")).text
    async with dashboard_client(backend, workflows=[]) as client:
        unknown = (await client.get(f"/runs/{handle.id}")).text
    assert '<span class="retry-attempt">attempt 2 of 3</span>' in known
    assert '<span class="retry-attempt">attempt 2</span>' in unknown


async def test_a_parked_parent_shows_its_child_and_the_child_its_signal(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    parent = await ow.run(waits_for_child)
    async with running_worker(backend, WORKFLOWS):
        await wait_for_parked(backend, parent.id)
        child_id = (await ow.list_runs(workflow_name="waits-for-signal")).data[0].id
        await wait_for_parked(backend, child_id)
    async with dashboard_client(backend, workflows=WORKFLOWS) as client:
        parent_page = (await client.get(f"/runs/{parent.id}")).text
        child_page = (await client.get(f"/runs/{child_id}")).text
    assert 'data-wait="child"' in parent_page
    assert f'<a class="waiting-child-link" href="/runs/{child_id}">' in parent_page
    assert 'id="run-available-at"' not in parent_page  # not the child's 1-year timeout
    assert 'data-wait="signal"' in child_page
    assert '<code class="signal-name">manager-approved</code>' in child_page
    assert _meta(parent_page, "run-duration").endswith("so far")


async def test_the_timeline_puts_parallel_steps_side_by_side(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(fans_out)
    async with running_worker(backend, WORKFLOWS):
        await wait_for_status(backend, handle.id, "completed", timeout=20)
    async with dashboard_client(backend, workflows=WORKFLOWS) as client:
        page = (await client.get(f"/runs/{handle.id}")).text
    assert 'id="run-timeline"' in page and "<svg" in page
    (left,) = _bars(page, "left")
    (right,) = _bars(page, "right")
    assert left["y"] != right["y"]
    left_span = (float(left["x"]), float(left["x"]) + float(left["width"]))
    right_span = (float(right["x"]), float(right["x"]) + float(right["width"]))
    assert left_span[0] < right_span[1] and right_span[0] < left_span[1]  # they overlap in time
    assert " style=" not in page  # the CSP forbids inline styles


async def test_search_finds_a_run_by_id_or_prefix(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    ids = [(await ow.run(double_it, n)).id for n in range(3)]
    shared = _common_prefix(ids)
    unique = next(
        ids[0][:n] for n in range(1, 37) if sum(i.startswith(ids[0][:n]) for i in ids) == 1
    )
    async with dashboard_client(backend) as client:
        exact = await client.get("/search", params={"q": ids[1].upper()})
        assert (exact.status_code, exact.headers["location"]) == (303, f"/runs/{ids[1]}")
        by_prefix = await client.get("/search", params={"q": unique})
        assert (by_prefix.status_code, by_prefix.headers["location"]) == (303, f"/runs/{ids[0]}")

        several = await client.get("/search", params={"q": shared})
        assert several.status_code == 200
        assert re.findall(r'<tr data-run-id="([^"]+)"', several.text) == sorted(ids)
        assert 'id="search-count"' in several.text

        none = await client.get("/search", params={"q": "ffffffff"})
        assert none.status_code == 200 and 'id="search-none"' in none.text

        bad = await client.get("/search", params={"q": "<run-42>"})
        assert bad.status_code == 400 and 'id="search-problem"' in bad.text
        assert "run ids are made of 0-9, a-f and" in html.unescape(bad.text)
        assert "<run-42>" not in bad.text  # escaped

        empty = await client.get("/search", params={"q": "  "})
        assert (empty.status_code, empty.headers["location"]) == (303, "/")
        index = await client.get("/")
    assert 'form class="run-search" id="run-search"' in index.text
    assert greet.spec.name  # the page's search box is on every page (base template)
