"""``ow runs list|show|cancel|retry|priority|signal|tail|export|fork|prune``: steer runs."""

from __future__ import annotations

import shlex
from typing import Any, TypeVar

import click
from rich.text import Text

from openworkflow.cli import common, console, failure
from openworkflow.cli.bulk import bulk_options, run_bulk, single_run_id
from openworkflow.cli.export import export_run
from openworkflow.cli.fork import fork_run
from openworkflow.cli.options import data_options
from openworkflow.cli.output import (
    RunExtras,
    record_to_json,
    run_details,
    runs_table,
    status_text,
)
from openworkflow.cli.prune import prune_runs
from openworkflow.cli.run import parse_tag_options
from openworkflow.cli.tail import tail
from openworkflow.client import OpenWorkflow
from openworkflow.core.cursor import Page
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_run import WorkflowRun, WorkflowRunStatus
from openworkflow.errors import DatabaseNotFoundError, WorkflowRunNotFoundError

T = TypeVar("T")

_STATUSES = [
    status.value for status in WorkflowRunStatus if status is not WorkflowRunStatus.UNKNOWN
]


@click.group()
@data_options
def runs() -> None:
    """List, inspect, cancel, retry, signal and follow workflow runs."""


runs.add_command(tail)
runs.add_command(export_run)
runs.add_command(fork_run)
runs.add_command(prune_runs)


@runs.command(name="list")
@click.option("--status", type=click.Choice(_STATUSES), help="Only runs with this status.")
@click.option("--workflow", "workflow_name", metavar="NAME", help="Only runs of this workflow.")
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="Page size."
)
@click.option("--after", metavar="CURSOR", help="The page after this cursor (older runs).")
@click.option("--before", metavar="CURSOR", help="The page before this cursor (newer runs).")
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="KEY=VALUE",
    callback=parse_tag_options,
    help="Only runs with this tag (repeatable: runs with every one).",
)
@data_options
def list_runs(
    status: str | None,
    workflow_name: str | None,
    limit: int,
    after: str | None,
    before: str | None,
    tags: dict[str, str],
) -> None:
    """List runs, newest first (one page; follow the printed cursor for more)."""
    if after and before:
        raise failure.usage_error("--after and --before cannot be used together")
    _, settings = common.load()

    async def fetch(client: OpenWorkflow) -> Any:
        try:
            return await client.list_runs(
                status=status,
                workflow_name=workflow_name,
                limit=limit,
                after=after,
                before=before,
                tags=tags or None,
            )
        except ValueError as error:
            if "cursor" not in str(error):
                raise
            raise failure.usage_error(
                str(error), hint="pass a cursor printed by `ow runs list`"
            ) from None

    try:
        page = common.run_async(common.with_client(settings, fetch, create=False))
    except DatabaseNotFoundError as error:
        console.say(str(error).capitalize() + ".", style="yellow")
        page = Page(data=[], next=None, prev=None)
    if console.wants_json():
        data = [record_to_json(run) for run in page.data]
        console.print_json({"data": data, "next": page.next, "prev": page.prev})
        return
    if not page.data:
        console.say("No runs found.")
        return
    console.out().print(runs_table(page.data))
    if page.next:
        again = "".join(f" --tag {shlex.quote(f'{k}={v}')}" for k, v in tags.items())
        console.say(f"More: ow runs list{again} --after {page.next}", style="dim")


@runs.command()
@click.argument("run_id", metavar="ID")
@data_options
def show(run_id: str) -> None:
    """Show a run: metadata, input, output or error, and its step attempts.

    ID may be the start of a run id, as long as only one run starts with it.
    """
    _, settings = common.load()

    async def fetch(client: OpenWorkflow) -> tuple[WorkflowRun, list[StepAttempt], RunExtras]:
        run = await client.find_run(run_id)
        extras = RunExtras(
            tags=await client.backend.get_run_tags(run.id),
            fork=await client.backend.get_run_fork(run.id),
        )
        return run, await _all_steps(client, run.id), extras

    run, steps, extras = common.on_existing_run(settings, run_id, fetch)
    if console.wants_json():
        fork = extras.fork
        console.print_json(
            {
                "run": record_to_json(run),
                "steps": [record_to_json(s) for s in steps],
                "tags": extras.tags,
                "forked_from": None if fork is None else record_to_json(fork),
            }
        )
        return
    console.out().print(run_details(run, steps, extras))


async def _all_steps(client: OpenWorkflow, run_id: str) -> list[StepAttempt]:
    steps: list[StepAttempt] = []
    cursor: str | None = None
    while True:
        page = await client.list_steps(run_id, limit=1000, after=cursor)
        steps.extend(page.data)
        if page.next is None:
            return steps
        cursor = page.next


@runs.command()
@click.argument("run_id", metavar="[ID]", required=False)
@bulk_options("cancel")
@data_options
def cancel(run_id: str | None, **filters: Any) -> None:
    """Cancel a pending, running or sleeping run, or every run matching the filters.

    With filters (and no ID), prints how many runs match and asks first
    (--yes does not ask); --json prints {"matched", "canceled", "skipped"}.
    Runs that finished meanwhile are skipped.
    """
    one_id = single_run_id(run_id, filters)
    if one_id is None:
        run_bulk("cancel", filters)
        return
    _, settings = common.load()

    async def do_cancel(client: OpenWorkflow) -> WorkflowRun:
        return await client.cancel((await client.find_run(one_id)).id)

    run = common.on_existing_run(settings, one_id, do_cancel)
    _report(run, "canceled")


@runs.command()
@click.argument("run_id", metavar="[ID]", required=False)
@bulk_options("retry")
@data_options
def retry(run_id: str | None, **filters: Any) -> None:
    """Put a failed or canceled run back to pending, or every one matching the filters.

    Completed steps are kept. With filters (and no ID), prints how many runs
    match and asks first (--yes does not ask); --json prints {"matched",
    "retried", "skipped"}.
    """
    one_id = single_run_id(run_id, filters)
    if one_id is None:
        run_bulk("retry", filters)
        return
    _, settings = common.load()

    async def do_retry(client: OpenWorkflow) -> WorkflowRun:
        full_id = (await client.find_run(one_id)).id
        handle = await client.retry(full_id)
        run = handle.workflow_run or await client.get_run(full_id)
        if run is None:
            raise WorkflowRunNotFoundError(full_id)
        return run

    _report(common.on_existing_run(settings, one_id, do_retry), "put back to pending")


# A negative N ("-3") is a value, not an option.
@runs.command(context_settings={"ignore_unknown_options": True})
@click.argument("run_id", metavar="ID")
@click.argument("priority", metavar="N", type=click.IntRange(-(2**31), 2**31 - 1))
@data_options
def priority(run_id: str, priority: int) -> None:
    """Set the priority of an unfinished run (higher is claimed first)."""
    _, settings = common.load()

    async def set_priority(client: OpenWorkflow) -> WorkflowRun:
        return await client.set_priority((await client.find_run(run_id)).id, priority)

    _report(common.on_existing_run(settings, run_id, set_priority), f"now has priority {priority}")


@runs.command(name="signal")
@click.argument("run_id", metavar="ID")
@click.argument("name", metavar="NAME")
@click.option("--data", metavar="JSON|@FILE", help="Payload as JSON, @file or @- (stdin).")
@click.option("--idempotency-key", metavar="K", help="A repeated key (same run, name) is a no-op.")
@data_options
def signal_run(run_id: str, name: str, data: str | None, idempotency_key: str | None) -> None:
    """Send signal NAME to one run; it is kept until the run's wait for NAME takes it."""
    payload = common.json_argument(data, "--data")
    _, settings = common.load()

    async def send(client: OpenWorkflow) -> WorkflowRun:
        run = await client.find_run(run_id)
        await client.signal(run.id, name, payload, idempotency_key=idempotency_key)
        return run

    run = common.on_existing_run(settings, run_id, send)
    if console.wants_json():
        console.print_json({"signal": name, "workflow_run_id": run.id})
    else:
        console.say(f"Signal {name!r} sent to run {run.id} ({run.workflow_name}).", style="green")


def _report(run: WorkflowRun, what: str) -> None:
    if console.wants_json():
        console.print_json(record_to_json(run))
        return
    console.out().print(
        Text.assemble(f"Run {run.id} ({run.workflow_name}) {what}: ", status_text(run.status))
    )
