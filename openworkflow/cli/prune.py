"""``ow runs prune --older-than D``: delete finished runs past an age, now.

The pruning itself is :func:`openworkflow.retention.prune_runs` (the loop
workers with a retention policy run too); this command parses, calls it
and prints the count.
"""

from __future__ import annotations

import click

from openworkflow.cli import common, console, failure
from openworkflow.cli.options import data_options
from openworkflow.core.duration import Duration
from openworkflow.core.retention import PRUNABLE_STATUSES, parse_retention
from openworkflow.errors import DatabaseNotFoundError
from openworkflow.retention import prune_runs as prune_backend_runs
from openworkflow.settings import EffectiveSettings


@click.command(name="prune")
@click.option(
    "--older-than",
    "older_than",
    required=True,
    metavar="AGE",
    help="Prune runs that finished longer ago than this (e.g. 30d, 12h; a bare number is seconds).",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(PRUNABLE_STATUSES),
    help="Only runs with this status (repeatable; default: completed, failed and canceled).",
)
@click.option("--workflow", "workflow_name", metavar="NAME", help="Only runs of this workflow.")
@click.option("--dry-run", is_flag=True, help="Count the runs that would be pruned; delete none.")
@data_options
def prune_runs(
    older_than: str, statuses: tuple[str, ...], workflow_name: str | None, dry_run: bool
) -> None:
    """Delete finished runs older than AGE, with their steps, in small batches.

    Pending, running and parked runs are never deleted, nor a run whose parent
    is still running or that has a child still running. Prints how many runs
    were deleted (or, with --dry-run, would be); --json prints
    {"count": N, "dry_run": ..., "older_than": ..., "statuses": [...], "workflow": ...}.
    """
    age = _checked_age(older_than)
    _, settings = common.load()
    chosen = statuses or PRUNABLE_STATUSES
    try:
        count = common.run_async(_prune(settings, age, chosen, workflow_name, dry_run))
    except DatabaseNotFoundError as error:
        console.say(str(error).capitalize() + ".", style="yellow")
        count = 0
    if console.wants_json():
        console.print_json(
            {
                "count": count,
                "dry_run": dry_run,
                "older_than": older_than,
                "statuses": list(chosen),
                "workflow": workflow_name,
            }
        )
        return
    runs = "run" if count == 1 else "runs"
    if dry_run:
        console.out().print(f"Would prune {count} finished {runs} (dry run: nothing deleted).")
    else:
        console.out().print(f"Pruned {count} finished {runs}.")


def _checked_age(text: str) -> Duration:
    """The age, or a usage error (exit code 2) saying what an age looks like."""
    try:
        parse_retention({"completed": text})
    except ValueError as error:
        message = str(error).removeprefix("completed: ")
        raise failure.usage_error(
            f"invalid --older-than {text!r}: {message}",
            hint="pass an age such as 30d, 12h or 90m",
        ) from None
    return text


async def _prune(
    settings: EffectiveSettings,
    age: Duration,
    statuses: tuple[str, ...],
    workflow_name: str | None,
    dry_run: bool,
) -> int:
    backend = common.backend_from(settings, create=False)
    try:
        return await prune_backend_runs(
            backend, age, statuses=statuses, workflow_name=workflow_name, dry_run=dry_run
        )
    finally:
        await backend.stop()
