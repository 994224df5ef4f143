"""``ow workflows list|pause|resume``: the project's workflows, and stopping their claims."""

from __future__ import annotations

import click
from rich.table import Table

from openworkflow.cli import common, console
from openworkflow.cli.options import data_options
from openworkflow.cli.output import when
from openworkflow.core.backend import PausedWorkflow
from openworkflow.discovery import discover


@click.group()
@data_options
def workflows() -> None:
    """List workflows; pause and resume their runs."""


@workflows.command(name="list")
@data_options
def list_workflows() -> None:
    """The project's workflows, and which workflow names are paused in the database."""
    _, settings = common.load()
    found = discover(settings.dirs, settings.ignore_patterns, settings.folder)
    paused = {
        item.workflow_name: item
        for item in common.run_async(
            common.with_client(settings, lambda client: client.paused_workflows(), create=False)
        )
    }
    rows = [(item.name, item.version) for item in found.workflows]
    rows += [(name, None) for name in sorted(paused) if name not in {row[0] for row in rows}]
    if console.wants_json():
        console.print_json(
            [
                {
                    "name": name,
                    "version": version,
                    "paused_at": _paused_at(paused.get(name)),
                    "in_project": any(item.name == name for item in found.workflows),
                }
                for name, version in rows
            ]
        )
        return
    table = Table("workflow", "version", "state")
    for name, version in rows:
        state = paused.get(name)
        label = f"[yellow]paused since {when(state.paused_at)}[/]" if state else "[green]active[/]"
        table.add_row(name, version or "-", label)
    console.out().print(table)


@workflows.command()
@click.argument("name")
@data_options
def pause(name: str) -> None:
    """Stop workers from claiming NAME's runs (every version); running passes finish."""
    _, settings = common.load()
    paused = common.run_async(common.with_client(settings, lambda c: c.pause_workflow(name)))
    if console.wants_json():
        console.print_json({"name": name, "paused_at": _paused_at(paused)})
        return
    console.say(
        f"Workflow {name!r} paused: workers take none of its runs until "
        f"`ow workflows resume {name}` (new runs still queue).",
        style="yellow",
    )


@workflows.command()
@click.argument("name")
@data_options
def resume(name: str) -> None:
    """Let workers claim NAME's runs again."""
    _, settings = common.load()
    was_paused = common.run_async(common.with_client(settings, lambda c: c.resume_workflow(name)))
    if console.wants_json():
        console.print_json({"name": name, "was_paused": was_paused})
        return
    if was_paused:
        console.say(f"Workflow {name!r} resumed: workers claim its runs again.", style="green")
    else:
        console.say(f"Workflow {name!r} was not paused; nothing changed.")


def _paused_at(paused: PausedWorkflow | None) -> str | None:
    return None if paused is None else paused.paused_at.isoformat()
