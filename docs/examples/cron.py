"""A workflow started by cron schedules, each tick's run knowing the tick it serves."""

from __future__ import annotations

from datetime import datetime

# --8<-- [start:cron]
from openworkflow import RunInfo, Schedule, Step, workflow


@workflow(
    name="nightly-cleanup",
    schedules=[
        Schedule("0 3 * * *", timezone="Europe/Paris", input={"keep_days": 30}),
        Schedule("0 12 * * SUN", name="weekly-deep-clean", input={"keep_days": 7}),
    ],
)
async def nightly_cleanup(input: dict[str, int], step: Step, run: RunInfo) -> str:
    tick = run.scheduled_at  # the tick this run serves, the same on every replay
    assert tick is not None
    removed = await step.run("remove-old-files", lambda: 42)
    return f"{tick:%Y-%m-%d %H:%M} UTC: removed {removed} files older than {input['keep_days']}d"


# --8<-- [end:cron]


async def example() -> None:
    """Let a day pass in the testing kit: one nightly tick runs."""
    from openworkflow.testing import WorkflowEnvironment

    async with WorkflowEnvironment(workflows=[nightly_cleanup]) as env:
        await env.advance("1d")
        runs = (await env.client.list_runs(workflow_name="nightly-cleanup")).data
        assert runs, "no scheduled run after a day"
        output = await env.result(runs[-1].id)
        assert output.endswith("removed 42 files older than 30d") or output.endswith("7d"), output
        assert isinstance(env.now(), datetime)
