"""Polling: check an outside system until it is ready, sleeping durably in between."""

from __future__ import annotations

# --8<-- [start:poll]
from openworkflow import Step, workflow

checks: dict[str, int] = {}


def export_status(job_id: str) -> str:
    """Stand-in for an API call: the export is ready on the fourth check."""
    checks[job_id] = checks.get(job_id, 0) + 1
    return "ready" if checks[job_id] >= 4 else "running"


@workflow(name="wait-for-export")
async def wait_for_export(input: str, step: Step) -> str:
    for attempt in range(100):  # each check and each sleep is a step: stay well under 1000
        status = await step.run(f"check-{attempt}", export_status, input)
        if status == "ready":
            return f"{input} ready after {attempt + 1} checks"
        await step.sleep(f"wait-{attempt}", "10m")
    # A poller that may run for longer starts afresh, with an empty history.
    await step.continue_as_new(input)
    return "continued"


# --8<-- [end:poll]


async def example() -> None:
    """The three ten-minute sleeps pass at once in the testing kit."""
    from openworkflow.testing import WorkflowEnvironment

    async with WorkflowEnvironment(workflows=[wait_for_export]) as env:
        assert await env.run(wait_for_export, "export-7") == "export-7 ready after 4 checks"
