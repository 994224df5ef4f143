"""``ow schedules list|pause|resume|trigger``: the cron schedules workers serve.

Workers store the schedules of the workflows they run when they start; these
commands read and change what is stored. ``list`` also shows the project's
declared schedules that no worker has stored yet.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
from rich.table import Table

from openworkflow.cli import common, console
from openworkflow.cli.failure import CliError
from openworkflow.cli.options import data_options
from openworkflow.cli.output import when
from openworkflow.core.schedule_store import ScheduleSnapshot, StoredSchedule
from openworkflow.discovery import discover

_NOT_STORED_HINT = (
    "workers store a schedule when they start: start one with `ow worker start`, "
    "and see the stored schedules with `ow schedules list`"
)


@click.group()
@data_options
def schedules() -> None:
    """List schedules; pause, resume or trigger one."""


@schedules.command(name="list")
@data_options
def list_schedules() -> None:
    """Each schedule: its workflow, cron, time zone, next and last tick, and whether paused."""
    _, settings = common.load()
    snapshot: ScheduleSnapshot = common.run_async(
        common.with_client(settings, lambda client: client.list_schedules(), create=False)
    )
    stored = {item.name for item in snapshot.schedules}
    found = discover(settings.dirs, settings.ignore_patterns, settings.folder)
    declared = [
        (name, item.name, schedule.cron, schedule.timezone)
        for item in found.workflows
        for name, schedule in zip(item.spec.schedule_names, item.spec.schedules, strict=True)
        if name not in stored
    ]
    if console.wants_json():
        rows = [_as_json(item) for item in snapshot.schedules]
        rows += [
            {"name": name, "workflow": workflow_name, "cron": cron, "timezone": zone,
             "stored": False, "next_tick": None, "last_tick": None, "paused_at": None}
            for name, workflow_name, cron, zone in declared
        ]  # fmt: skip
        console.print_json(rows)
        return
    table = Table("schedule", "workflow", "cron", "time zone", "next tick", "last tick", "state")
    for item in snapshot.schedules:
        state = (
            f"[yellow]paused since {when(item.paused_at)}[/]"
            if item.paused_at
            else "[green]active[/]"
        )
        table.add_row(
            item.name, item.workflow_name, item.cron, item.timezone,
            _next(item, snapshot.now), when(item.last_tick_at), state,
        )  # fmt: skip
    for name, workflow_name, cron, zone in declared:
        table.add_row(name, workflow_name, cron, zone, "-", "-", "[dim]not stored yet[/]")
    console.out().print(table)


@schedules.command()
@click.argument("name")
@data_options
def pause(name: str) -> None:
    """Stop NAME's ticks: no run starts until it is resumed (runs already started go on)."""
    _, settings = common.load()
    paused = common.run_async(common.with_client(settings, lambda c: c.pause_schedule(name)))
    item = _found(name, paused)
    if console.wants_json():
        console.print_json(_as_json(item))
        return
    console.say(
        f"Schedule {name!r} paused: no run starts until `ow schedules resume {name}`.",
        style="yellow",
    )


@schedules.command()
@click.argument("name")
@data_options
def resume(name: str) -> None:
    """Let NAME tick again from now (ticks missed while paused are skipped)."""
    _, settings = common.load()
    resumed = common.run_async(common.with_client(settings, lambda c: c.resume_schedule(name)))
    item = _found(name, resumed)
    if console.wants_json():
        console.print_json(_as_json(item))
        return
    console.say(f"Schedule {name!r} resumed: its next tick starts a run.", style="green")


@schedules.command()
@click.argument("name")
@data_options
def trigger(name: str) -> None:
    """Start a run of NAME's workflow now, with the schedule's input.

    The run serves no tick (its RunInfo.scheduled_at is None) and does not
    change the schedule's own ticks.
    """
    _, settings = common.load()
    handle = common.run_async(common.with_client(settings, lambda c: c.trigger_schedule(name)))
    if handle is None:
        raise CliError(f"no stored schedule named {name!r}", hint=_NOT_STORED_HINT)
    if console.wants_json():
        console.print_json({"schedule": name, "run_id": handle.id})
        return
    click.echo(handle.id)
    console.say(f"Started run {handle.id} of schedule {name!r}; follow it with `ow runs show`.")


def _found(name: str, item: StoredSchedule | None) -> StoredSchedule:
    if item is None:
        raise CliError(f"no stored schedule named {name!r}", hint=_NOT_STORED_HINT)
    return item


def _next(item: StoredSchedule, now: datetime) -> str:
    if item.paused_at is not None:
        return "-"
    tick = item.next_tick()
    return when(tick) + (" (overdue)" if tick < now else "")


def _as_json(item: StoredSchedule) -> dict[str, Any]:
    return {
        "name": item.name,
        "workflow": item.workflow_name,
        "version": item.version,
        "cron": item.cron,
        "timezone": item.timezone,
        "overlap": item.overlap,
        "catchup": item.catchup,
        "input": item.input,
        "stored": True,
        "next_tick": None if item.paused_at is not None else item.next_tick().isoformat(),
        "last_tick": None if item.last_tick_at is None else item.last_tick_at.isoformat(),
        "last_run_id": item.last_run_id,
        "paused_at": None if item.paused_at is None else item.paused_at.isoformat(),
        "first_seen_at": item.first_seen_at.isoformat(),
    }
