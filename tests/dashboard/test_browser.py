"""The dashboard in a real headless Chromium, against real ``ow`` processes.

A temporary project runs ``ow worker start`` and ``ow dashboard`` as
subprocesses; Playwright drives Debian's Chromium (``/usr/bin/chromium``):
open the list, open a run, cancel one, create one, and watch a status change
live. Under ``CI`` a missing browser fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openworkflow import SyncOpenWorkflow
from tests.cli.helpers import Background, clean_env, write
from tests.support.waiting import block_until

CHROMIUM = os.environ.get("OPENWORKFLOW_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = os.environ.get("OPENWORKFLOW_DASHBOARD_SCREENSHOT")  # e.g. docs/dashboard-run.png

WORKFLOWS = """
import asyncio
from collections import Counter
from openworkflow import RetryPolicy, RunInfo, Step, workflow

_tries = Counter()

@workflow(name="greet")
async def greet(input: dict, step: Step) -> dict:
    name = await step.run("pick-name", lambda: input.get("name", "world"))
    return await step.run("say-hello", lambda: {"greeting": f"Hello, {name}!"})

@workflow(name="checkout")
async def checkout(input: dict, step: Step, run: RunInfo) -> dict:
    async def pause(value, seconds):
        await asyncio.sleep(seconds)
        return value

    def charge():
        _tries[run.id] += 1
        if _tries[run.id] < 3:
            raise RuntimeError(f"card declined (try {_tries[run.id]})")
        return "ch_42"

    cart = await step.run("load-cart", lambda: pause({"items": 3}, 0.15))
    stock, price = await asyncio.gather(
        step.run("check-stock", lambda: pause(True, 0.4)),
        step.run("price-cart", lambda: pause(42, 0.25)),
    )
    payment = await step.run(
        "charge-card", charge, retry_policy=RetryPolicy(initial_interval="250ms")
    )
    await step.sleep("cool-off", "600ms")
    await step.run("send-receipt", lambda: pause("sent", 0.1))
    return {"payment": payment, "items": cart["items"], "total": price, "in_stock": stock}

@workflow(name="await-approval")
async def await_approval(step: Step) -> object:
    await step.run("notify", lambda: "sent")
    return await step.wait_for_signal("approve", timeout="1h")
"""


def _browser_or_skip() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    missing = sync_playwright is None or not shutil.which(CHROMIUM)
    if missing:
        message = f"Playwright or {CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the browser tests")
        pytest.skip(message)
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[str, SyncOpenWorkflow]]:
    write(
        tmp_path / "openworkflow.config.py",
        """
        from openworkflow import define_config
        config = define_config(backend="sqlite:///ow.db", dirs=["./flows"],
                               worker={"concurrency": 4})
        """,
    )
    write(tmp_path / "flows" / "example.py", WORKFLOWS)
    port = _free_port()
    env = clean_env()
    worker = Background(tmp_path, "worker", "start", env=env)
    dashboard = Background(tmp_path, "dashboard", "--port", str(port), env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        block_until(lambda: _healthy(url), "the dashboard to answer", timeout=30)
        with SyncOpenWorkflow(f"sqlite:///{tmp_path / 'ow.db'}") as client:
            yield url, client
    finally:
        dashboard.stop()
        worker.stop()


@pytest.mark.slow
def test_list_detail_cancel_create_and_live_updates(
    project: tuple[str, SyncOpenWorkflow],
) -> None:
    sync_playwright = _browser_or_skip()
    url, client = project
    done = client.run("greet", {"name": "<b>Ana</b>"})
    assert done.result(timeout="20s") == {"greeting": "Hello, <b>Ana</b>!"}
    shopped = client.run("checkout", {"cart": "c-1"})
    assert shopped.result(timeout="30s")["payment"] == "ch_42"
    to_cancel = client.run("await-approval")
    to_approve = client.run("await-approval")
    block_until(
        lambda: all(
            any(step.kind == "signal-wait" for step in client.list_steps(h.id).data)
            for h in (to_cancel, to_approve)
        ),
        "both approvals to wait",
    )

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("dialog", lambda dialog: dialog.accept())

        # The list: every run, counts, the escaped input is text.
        page.goto(url + "/")
        for handle in (done, to_cancel, to_approve):
            page.wait_for_selector(f'tr[data-run-id="{handle.id}"]')
        assert page.inner_text('[data-count="completed"]').strip() == "2"  # greet, checkout
        assert page.locator("b", has_text="Ana").count() == 0  # never rendered as HTML

        # Open a run from the list.
        page.click(f'tr[data-run-id="{done.id}"] a.run-link')
        page.wait_for_url(f"**/runs/{done.id}")
        assert page.get_attribute("#run-status", "data-status") == "completed"
        assert "Hello, <b>Ana</b>!" in page.inner_text("#run-output")
        page.wait_for_selector('tr[data-step-name="say-hello"]')

        # The timeline of a run with parallel steps, retries and a sleep.
        page.goto(f"{url}/runs/{shopped.id}")
        page.wait_for_selector("#run-timeline svg.timeline")
        assert page.locator("#run-error").count() == 0  # recovered: no stale error
        charge = page.locator('#timeline g[data-step-name="charge-card"] rect')
        assert [charge.nth(i).get_attribute("data-status") for i in range(3)] == [
            "failed",
            "failed",
            "completed",
        ]
        stock = page.locator('#timeline g[data-step-name="check-stock"] rect').bounding_box()
        price = page.locator('#timeline g[data-step-name="price-cart"] rect').bounding_box()
        assert stock and price and stock["width"] > 0
        assert stock["x"] < price["x"] + price["width"] and price["x"] < stock["x"] + stock["width"]
        assert stock["y"] != price["y"]  # side by side in time, in their own lanes
        sleep_bar = page.locator('#timeline g[data-step-name="cool-off"] rect')
        assert "kind-sleep" in (sleep_bar.get_attribute("class") or "")
        assert (
            page.evaluate(
                "() => getComputedStyle(document.querySelector('#timeline .bar-failed')).fill"
            )
            != "none"
        )
        if SCREENSHOT:
            page.screenshot(path=SCREENSHOT, full_page=True)

        # Find runs by id prefix from the search box on any page.
        everyone = [done.id, shopped.id, to_cancel.id, to_approve.id]
        unique = next(
            shopped.id[:n]
            for n in range(4, 37)
            if sum(run_id.startswith(shopped.id[:n]) for run_id in everyone) == 1
        )
        page.goto(url + "/")
        page.fill("#run-search input[name=q]", unique)
        page.press("#run-search input[name=q]", "Enter")
        page.wait_for_url(f"**/runs/{shopped.id}")
        page.fill("#run-search input[name=q]", shopped.id[:1])
        page.press("#run-search input[name=q]", "Enter")
        page.wait_for_selector("#search-results")
        listed = page.locator("#search-results tr[data-run-id]")
        assert listed.count() >= 2
        page.fill("#run-search input[name=q]", "fffff")
        page.press("#run-search input[name=q]", "Enter")
        page.wait_for_selector("#search-none")

        # Cancel a waiting run.
        page.goto(f"{url}/runs/{to_cancel.id}")
        page.click("form#cancel-run button[type=submit]")
        page.wait_for_selector('#run-status[data-status="canceled"]')
        assert client.handle(to_cancel.id).status() == "canceled"

        # A status change shows up live, without reloading.
        page.goto(f"{url}/runs/{to_approve.id}")
        page.wait_for_selector('#run-status[data-status="running"]')
        marker = page.evaluate("() => (window.__owMarker = Math.random())")
        assert client.send_signal("approve", {"ok": True}) == [to_approve.id]
        page.wait_for_selector('#run-status[data-status="completed"]', timeout=15_000)
        assert page.evaluate("() => window.__owMarker") == marker  # same page, no reload

        # Create a run from the form.
        page.goto(url + "/")
        page.fill("form#create-run [name=workflow_name]", "greet")
        page.fill("form#create-run [name=input]", '{"name": "Browser"}')
        page.click("form#create-run [type=submit]")
        page.wait_for_url("**/runs/*")
        created_id = page.url.rstrip("/").rsplit("/", 1)[-1]
        page.wait_for_selector('#run-status[data-status="completed"]', timeout=15_000)
        assert client.handle(created_id).result(timeout="5s") == {"greeting": "Hello, Browser!"}

        # A phone-sized viewport still shows the run.
        phone = browser.new_page(viewport={"width": 390, "height": 844})
        phone.goto(f"{url}/runs/{done.id}")
        assert phone.is_visible("#run-status")
        browser.close()


@pytest.mark.slow
def test_bulk_cancel_selected_then_retry_all_matching(
    project: tuple[str, SyncOpenWorkflow],
) -> None:
    sync_playwright = _browser_or_skip()
    url, client = project
    waiting = [client.run("await-approval") for _ in range(3)]
    block_until(
        lambda: all(
            any(step.kind == "signal-wait" for step in client.list_steps(h.id).data)
            for h in waiting
        ),
        "the approvals to wait",
    )
    chosen, kept = waiting[:2], waiting[2]

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("dialog", lambda dialog: dialog.accept())

        # Tick two runs, cancel them: a confirmation page with the count first.
        page.goto(url + "/?workflow=await-approval")
        for handle in chosen:
            page.check(f'tr[data-run-id="{handle.id}"] input.bulk-select')
        page.click("#bulk-cancel-selected")
        page.wait_for_selector("#bulk-confirm")
        assert page.inner_text("#bulk-count").strip() == "2"
        assert all(client.handle(h.id).status() != "canceled" for h in waiting)  # not yet
        page.click("#bulk-confirm button[type=submit]")
        page.wait_for_selector("#bulk-message")
        assert page.inner_text("#bulk-message").strip() == "Canceled 2 runs."
        assert [client.handle(h.id).status() for h in chosen] == ["canceled", "canceled"]
        assert client.handle(kept.id).status() != "canceled"  # not ticked: left alone

        # Retry every canceled run of the workflow: "all matching this filter".
        page.goto(url + "/?status=canceled&workflow=await-approval")
        page.click("#bulk-retry-all")
        page.wait_for_selector("#bulk-confirm")
        assert page.inner_text("#bulk-count").strip() == "2"
        page.click("#bulk-confirm button[type=submit]")
        page.wait_for_selector("#bulk-message")
        assert page.inner_text("#bulk-message").strip() == "Retried 2 runs."
        block_until(
            lambda: all(client.handle(h.id).status() in ("pending", "running") for h in chosen),
            "the retried runs to be pending or running again",
        )
        browser.close()
