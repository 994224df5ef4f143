"""``ow runs fork ID --from-step NAME [--input JSON]``: rerun a finished run from a step."""

from __future__ import annotations

import click

from openworkflow.cli import common, console
from openworkflow.cli.options import data_options
from openworkflow.client import OpenWorkflow, RunHandle
from openworkflow.core.workflow_run import WorkflowRun


@click.command(name="fork")
@click.argument("run_id", metavar="ID")
@click.option("--from-step", "from_step", required=True, metavar="NAME", help="The step to rerun.")
@click.option("--input", "input_text", metavar="JSON|@FILE", help="New input (default: the run's).")
@data_options
def fork_run(run_id: str, from_step: str, input_text: str | None) -> None:
    """Start a new run of a finished run's workflow that reruns it from step NAME.

    The steps before NAME are copied as they ended (not executed again); NAME
    and the steps after it run. The new run is linked to the original.
    """
    new_input = common.json_argument(input_text, "--input")
    _, settings = common.load()

    async def fork(client: OpenWorkflow) -> tuple[WorkflowRun, RunHandle]:
        source = await client.find_run(run_id)
        return source, await client.fork(source.id, from_step=from_step, input=new_input)

    source, handle = common.on_existing_run(settings, run_id, fork)
    if console.wants_json():
        console.print_json(
            {"workflow_run_id": handle.id, "forked_from_id": source.id, "from_step": from_step}
        )
    else:
        console.say(
            f"Run {handle.id} ({source.workflow_name}) forked from run {source.id} at step "
            f"{from_step!r}; it reruns from there.",
            style="green",
        )
