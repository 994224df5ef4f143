"""``ow run NAME``: start a run by workflow name, optionally waiting for its result."""

from __future__ import annotations

from typing import Any

import click

from openworkflow.cli import common
from openworkflow.cli.options import data_options
from openworkflow.cli.output import pretty_json, record_to_json
from openworkflow.client import OpenWorkflow
from openworkflow.core.duration import parse_duration_ms
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import (
    InvalidDurationError,
    WorkflowCanceledError,
    WorkflowFailedError,
    WorkflowRunNotFoundError,
)
from openworkflow.settings import EffectiveSettings


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parse_duration_ms(value)
    except (InvalidDurationError, ValueError, TypeError):
        raise click.BadParameter(
            f"{value!r} is not a duration; use e.g. 30s, 5m, 1h", ctx=ctx, param=param
        ) from None
    return value


@click.command()
@click.argument("name")
@click.option("--input", "input_", metavar="JSON|@FILE", help="Input as JSON, @file or @- (stdin).")
@click.option("--version", "version", metavar="V", help="Workflow version to run.")
@click.option("--idempotency-key", metavar="K", help="Return the existing run with this key.")
@click.option("--wait", is_flag=True, help="Wait for the run to finish and print its output.")
@click.option(
    "--timeout",
    default="5m",
    show_default=True,
    callback=_duration,
    help="How long --wait waits (the run goes on afterwards).",
)
@data_options
def run(
    name: str,
    input_: str | None,
    version: str | None,
    idempotency_key: str | None,
    wait: bool,
    timeout: str,
) -> None:
    """Start a run of workflow NAME and print its id.

    No workflow code is needed here: a worker that has NAME executes it. With
    --wait, print the output when it completes (exit 1 if it fails or is
    canceled).
    """
    data = common.json_argument(input_, "--input")
    _, settings = common.load()
    code = common.run_async(_run(settings, name, data, version, idempotency_key, wait, timeout))
    if code:
        raise click.exceptions.Exit(code)


async def _run(
    settings: EffectiveSettings,
    name: str,
    data: Any,
    version: str | None,
    idempotency_key: str | None,
    wait: bool,
    timeout: str,
) -> int:
    async with common.opened_client(settings) as client:
        handle = await client.run(name, data, version=version, idempotency_key=idempotency_key)
        if not wait:
            _report_started(handle.workflow_run)
            return 0
        common.say(f"Started run {handle.id} of {name}; waiting up to {timeout}…", style="dim")
        try:
            output = await handle.result(timeout=timeout)
        except (WorkflowFailedError, WorkflowCanceledError) as error:
            await _report_finished(client, handle.id, error)
            return common.EXIT_FAILED
        await _report_finished(client, handle.id, None, output)
        return 0


def _report_started(workflow_run: WorkflowRun | None) -> None:
    assert workflow_run is not None  # a handle from run() carries its run
    if common.wants_json():
        common.print_json(record_to_json(workflow_run))
        return
    click.echo(workflow_run.id)
    common.say(
        f"Started run of {workflow_run.workflow_name} ({workflow_run.status}). "
        f"Follow it with `ow runs show {workflow_run.id}`.",
        style="dim",
    )


async def _report_finished(
    client: OpenWorkflow, run_id: str, error: Exception | None, output: Any = None
) -> None:
    final = await client.get_run(run_id)
    if final is None:
        raise WorkflowRunNotFoundError(run_id)
    if common.wants_json():
        common.print_json(record_to_json(final))
    elif error is None:
        click.echo(pretty_json(output))
    if error is not None:
        common.say(str(error), style="red")
        common.say(f"See its steps with `ow runs show {run_id}`.", style="dim")
    elif not common.wants_json():
        common.say(f"Run {run_id} completed.", style="green")
