"""``ow run NAME``: start a run by workflow name, optionally waiting for its result."""

from __future__ import annotations

from typing import Any

import click

from openworkflow.cli import common, console, failure
from openworkflow.cli.options import data_options
from openworkflow.cli.output import pretty_json, record_to_json
from openworkflow.client import OpenWorkflow
from openworkflow.config import shorten
from openworkflow.core.duration import parse_duration_ms
from openworkflow.core.registry import describe
from openworkflow.core.tags import parse_tags
from openworkflow.core.workflow_definition import WorkflowSpec
from openworkflow.core.workflow_run import WorkflowRun, WorkflowRunStatus
from openworkflow.discovery import declared_specs, discover
from openworkflow.errors import (
    InputValidationError,
    InvalidDurationError,
    ResultTimeoutError,
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


def parse_tag_options(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> dict[str, str]:
    """Repeated ``--tag KEY=VALUE`` options as checked tags (``ow run``, ``ow runs list``)."""
    try:
        return parse_tags(value, "--tag")
    except (ValueError, TypeError) as error:
        raise click.BadParameter(str(error), ctx=ctx, param=param) from None


@click.command()
@click.argument("name")
@click.option("--input", "input_", metavar="JSON|@FILE", help="Input as JSON, @file or @- (stdin).")
@click.option("--version", "version", metavar="V", help="Workflow version to run.")
@click.option("--idempotency-key", metavar="K", help="Return the existing run with this key.")
@click.option(
    "--priority",
    type=click.IntRange(-(2**31), 2**31 - 1),
    metavar="N",
    help="Claimed before due runs of lower priority (default: the workflow's, else 0).",
)
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="KEY=VALUE",
    callback=parse_tag_options,
    help="Tag the run (repeatable); find it with `ow runs list --tag KEY=VALUE`.",
)
@click.option("--wait", is_flag=True, help="Wait for the run to finish and print its output.")
@click.option(
    "--force",
    is_flag=True,
    help="Start it even if this project has no workflow NAME (a worker elsewhere runs it).",
)
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
    priority: int | None,
    tags: dict[str, str],
    wait: bool,
    force: bool,
    timeout: str,
) -> None:
    """Start a run of workflow NAME and print its id.

    In a project, NAME (and --version) must be one of the project's workflows,
    or declared with declare_workflow() in its files, and --input is checked
    against its schema before anything is written; --force skips both for a
    workflow that only another service knows. With --wait, print the output
    when it completes (exit 1 if it fails, is canceled or --timeout passes).
    """
    data = common.json_argument(input_, "--input")
    loaded, settings = common.load()
    workflow: WorkflowSpec | str = name
    if loaded.path is not None and not force:
        WorkflowSpec(name=name, version=version).validate_input(data)  # plain JSON, first
        workflow = known_workflow(settings, name, version)
        check_input(workflow, data)
    options = {
        "version": version,
        "idempotency_key": idempotency_key,
        "priority": priority,
        "tags": tags or None,
    }
    code = common.run_async(_run(settings, workflow, data, options, wait, timeout))
    if code:
        raise click.exceptions.Exit(code)


def known_workflow(settings: EffectiveSettings, name: str, version: str | None) -> WorkflowSpec:
    """The project's workflow (or declared spec) with exactly this name and version.

    Raises:
        CliError: no such workflow; the message lists the known ones (exit code 2).
    """
    found = discover(settings.dirs, settings.ignore_patterns, settings.folder)
    specs = [item.spec for item in found.workflows] + declared_specs(found)
    for spec in specs:
        if spec.name == name and spec.version == version:
            return spec
    known = "".join(f"\n  - {describe(spec.name, spec.version)}" for spec in specs)
    lines = [
        f"no workflow {describe(name, version)} in this project "
        f"({settings.config_path}); known workflows:{known or ' none'}"
    ]
    lines += [f"  ✗ could not import {problem}" for problem in found.problems]
    versions = [spec.version for spec in specs if spec.name == name]
    if versions:
        choices = ", ".join("no --version" if v is None else f"--version {v}" for v in versions)
        hint = f"{name!r} exists with other versions: use {choices}"
    else:
        hint = (
            "check the name (`ow doctor` lists the workflows), or pass --force if a worker of "
            "another service runs it"
        )
    raise failure.usage_error("\n".join(lines), hint=hint)


def check_input(spec: WorkflowSpec, data: Any) -> None:
    """Validate ``data`` against the workflow's schema before anything is written.

    Raises:
        CliError: each rejected field with the reason (exit code 2).
    """
    try:
        spec.validate_input(data)
    except InputValidationError as error:
        lines = [f"invalid --input for workflow {describe(spec.name, spec.version)}:"]
        for item in error.errors:
            field = ".".join(str(part) for part in item.get("loc", ())) or "(input)"
            got = item.get("input")
            shown = "" if isinstance(got, dict) else f" (got {shorten(got)})"
            lines.append(f"  - {field}: {item.get('msg', 'invalid')}{shown}")
        raise failure.usage_error(
            "\n".join(lines), hint="pass --input as JSON matching the workflow's input type"
        ) from None


async def _run(
    settings: EffectiveSettings,
    workflow: WorkflowSpec | str,
    data: Any,
    options: dict[str, Any],
    wait: bool,
    timeout: str,
) -> int:
    async with common.opened_client(settings) as client:
        handle = await client.run(workflow, data, **options)
        if not wait:
            _report_started(handle.workflow_run)
            return 0
        name = workflow if isinstance(workflow, str) else workflow.name
        console.say(f"Started run {handle.id} of {name}; waiting up to {timeout}…", style="dim")
        try:
            output = await handle.result(timeout=timeout)
        except (WorkflowFailedError, WorkflowCanceledError) as error:
            await _report_finished(client, handle.id, error)
            return failure.EXIT_FAILED
        except ResultTimeoutError:
            await _report_timeout(client, handle.id, timeout)
            return failure.EXIT_FAILED
        await _report_finished(client, handle.id, None, output)
        return 0


async def _report_timeout(client: OpenWorkflow, run_id: str, timeout: str) -> None:
    """Say where the run stands when --wait gives up: its status and last error."""
    run = await client.get_run(run_id)
    if run is None:
        raise WorkflowRunNotFoundError(run_id)
    if console.wants_json():
        console.print_json(record_to_json(run))
    console.say(
        f"Timed out after {timeout} waiting for run {run_id}: it is {run.status} "
        f"after {run.attempts} attempt(s); the run goes on.",
        style="red",
    )
    message = run.error.get("message") if isinstance(run.error, dict) else run.error
    if message:
        console.say(f"Last error: {message}", style="red")
    elif run.status == WorkflowRunStatus.PENDING and run.attempts == 0:
        console.say("No worker has picked it up yet: is a worker running (`ow worker start`)?")
    console.say(f"Follow it with `ow runs show {run_id}`.", style="dim")


def _report_started(workflow_run: WorkflowRun | None) -> None:
    assert workflow_run is not None  # a handle from run() carries its run
    if console.wants_json():
        console.print_json(record_to_json(workflow_run))
        return
    click.echo(workflow_run.id)
    console.say(
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
    if console.wants_json():
        console.print_json(record_to_json(final))
    elif error is None:
        click.echo(pretty_json(output))
    if error is not None:
        console.say(str(error), style="red")
        console.say(f"See its steps with `ow runs show {run_id}`.", style="dim")
    elif not console.wants_json():
        console.say(f"Run {run_id} completed.", style="green")
