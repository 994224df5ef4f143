"""The dashboard's fork: "Fork from here" on a finished run's steps, and the links both ways."""

from __future__ import annotations

import re
from typing import Any

import pytest

from openworkflow import OpenWorkflow, RetryPolicy, Step, workflow
from openworkflow.errors import WorkflowFailedError
from tests.dashboard.helpers import dashboard_client
from tests.worker.helpers import list_steps, running_worker

BODIES: list[str] = []
FIXED = {"now": False}


def fetch() -> str:
    BODIES.append("fetch")
    return "data"


def publish(data: str) -> str:
    BODIES.append("publish")
    if not FIXED["now"]:
        raise RuntimeError("the feed refused the post")
    return f"published {data}"


@workflow(name="dash-fork")
async def dash_fork(step: Step) -> str:
    data = await step.run("fetch", fetch)
    return str(
        await step.run("publish", publish, data, retry_policy=RetryPolicy(maximum_attempts=2))
    )


@workflow(name="dash-fork-waits")
async def dash_fork_waits(step: Step) -> str:
    await step.wait_for_signal("go", timeout="1h")
    return "done"


def _href(page: str, css_class: str) -> str | None:
    match = re.search(rf'class="{css_class}" href="([^"]+)"', page)
    return match.group(1) if match else None


def _fork_buttons(page: str) -> list[str]:
    return re.findall(r'<input type="hidden" name="step" value="([^"]+)">', page)


async def test_fork_from_a_step_of_a_failed_run(backend: Any) -> None:
    BODIES.clear()
    FIXED["now"] = False
    ow = OpenWorkflow(backend)
    handle = await ow.run(dash_fork)
    async with running_worker(backend, [dash_fork]), dashboard_client(backend) as client:
        with pytest.raises(WorkflowFailedError):
            await handle.result(timeout="20s")
        page = (await client.get(f"/runs/{handle.id}")).text
        # One button per step name (publish failed twice: two attempts, one button).
        assert _fork_buttons(page) == ["fetch", "publish"]
        assert (
            len([a for a in await list_steps(backend, handle.id) if a.step_name == "publish"]) == 2
        )

        refused = await client.post(f"/runs/{handle.id}/fork", data={"step": "nope"})
        assert refused.status_code == 409 and "has no step &#39;nope&#39;" in refused.text

        FIXED["now"] = True
        BODIES.clear()
        forked = await client.post(f"/runs/{handle.id}/fork", data={"step": "publish"})
        assert forked.status_code == 303
        fork_id = forked.headers["location"].rsplit("/", 1)[-1]
        assert fork_id != handle.id
        assert await ow.handle(fork_id).result(timeout="20s") == "published data"
        assert BODIES == ["publish"]  # fetch came from the copy

        fork_page = (await client.get(f"/runs/{fork_id}")).text
        assert _href(fork_page, "forked-from-link") == f"/runs/{handle.id}"
        assert "at step <code>publish</code>" in fork_page
        source_page = (await client.get(f"/runs/{handle.id}")).text
        assert _href(source_page, "fork-link") == f"/runs/{fork_id}"


async def test_a_run_going_on_offers_no_fork(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(dash_fork_waits)
    async with running_worker(backend, [dash_fork_waits]), dashboard_client(backend) as client:
        from tests.worker.helpers import wait_for_parked

        await wait_for_parked(backend, handle.id)
        page = (await client.get(f"/runs/{handle.id}")).text
        assert _fork_buttons(page) == [] and "Fork from here" not in page
        refused = await client.post(f"/runs/{handle.id}/fork", data={"step": "go"})
        assert refused.status_code == 409 and "only a finished run can be forked" in refused.text
        await ow.cancel(handle.id)
