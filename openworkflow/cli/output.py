"""Rendering runs and steps: JSON-ready dicts for ``--json``, rich tables for people."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from openworkflow.core.error import error_message
from openworkflow.core.forks import RunFork
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_run import WorkflowRun, WorkflowRunStatus

STATUS_STYLES = {
    "pending": "yellow",
    "running": "blue",
    "sleeping": "blue",
    "completed": "green",
    "succeeded": "green",
    "failed": "red",
    "canceled": "magenta",
}


def record_to_json(record: WorkflowRun | StepAttempt | RunFork) -> dict[str, Any]:
    """A run, step attempt or fork link as a JSON-ready dict (snake_case fields, ISO times)."""
    result: dict[str, Any] = {}
    for item in fields(record):
        value = getattr(record, item.name)
        result[item.name] = value.isoformat() if isinstance(value, datetime) else value
    return result


def status_text(status: str) -> Text:
    """A status, coloured."""
    return Text(status, style=STATUS_STYLES.get(status, ""))


def when(value: datetime | None) -> str:
    """A time in the local zone, to the second."""
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def took(start: datetime | None, end: datetime | None) -> str:
    """The time between two instants, short (``1.2s``, ``3m04s``)."""
    if start is None or end is None:
        return "-"
    seconds = (end - start).total_seconds()
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds >= 1 else f"{seconds * 1000:.0f}ms"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def pretty_json(value: Any) -> str:
    """JSON indented for reading."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def runs_table(runs: Sequence[WorkflowRun]) -> Table:
    """Runs, one per row, newest first."""
    table = Table(show_edge=False, header_style="bold")
    table.add_column("ID", no_wrap=True)
    table.add_column("Workflow")
    table.add_column("Version")
    table.add_column("Status")
    table.add_column("Attempts", justify="right")
    table.add_column("Created", no_wrap=True)
    table.add_column("Took", justify="right")
    for run in runs:
        table.add_row(
            run.id,
            Text(run.workflow_name),
            Text(run.version or "-"),
            status_text(run.status),
            str(run.attempts),
            when(run.created_at),
            took(run.started_at, run.finished_at),
        )
    return table


def steps_table(steps: Sequence[StepAttempt]) -> Table:
    """Step attempts, oldest first."""
    table = Table(show_edge=False, header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("Step")
    table.add_column("Kind")
    table.add_column("Status")
    table.add_column("Started", no_wrap=True)
    table.add_column("Took", justify="right")
    table.add_column("Detail")
    for number, step in enumerate(steps, start=1):
        detail = error_message(step.error) if step.error is not None else _step_detail(step)
        table.add_row(
            str(number),
            Text(step.step_name),
            step.kind,
            status_text(step.status),
            when(step.started_at),
            took(step.started_at, step.finished_at),
            Text(detail, overflow="fold"),
        )
    return table


def _step_detail(step: StepAttempt) -> str:
    if step.child_workflow_run_id:
        return f"child run {step.child_workflow_run_id}"
    if step.output is None:
        return ""
    text = json.dumps(step.output, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True, slots=True)
class RunExtras:
    """What ``ow runs show`` reads besides the run row: its tags and its fork link."""

    tags: dict[str, str] = field(default_factory=dict)
    fork: RunFork | None = None


def run_details(
    run: WorkflowRun, steps: Sequence[StepAttempt], extras: RunExtras | None = None
) -> RenderableType:
    """One run: metadata, tags, fork link, input, output or error, and its step attempts."""
    meta = Table.grid(padding=(0, 2))
    meta.add_column(style="bold")
    meta.add_column()
    rows: list[tuple[str, str | Text]] = [
        ("ID", run.id),
        ("Workflow", Text(run.workflow_name)),
        ("Version", Text(run.version or "-")),
        ("Status", status_text(run.status)),
        ("Attempts", str(run.attempts)),
        ("Idempotency key", Text(run.idempotency_key or "-")),
        ("Created", when(run.created_at)),
        ("Started", when(run.started_at)),
        ("Finished", when(run.finished_at)),
        ("Took", took(run.started_at, run.finished_at)),
    ]
    if run.available_at is not None and not run.is_terminal:
        rows.append(("Available at", when(run.available_at)))
    if run.deadline_at is not None:
        rows.append(("Deadline", when(run.deadline_at)))
    if run.parent_step_attempt_id:
        rows.append(("Parent step", run.parent_step_attempt_id))
    if run.worker_id and not run.is_terminal:
        rows.append(("Worker", run.worker_id))
    rows.extend(_extra_rows(extras or RunExtras()))
    for label, value in rows:
        meta.add_row(label, value)
    parts: list[RenderableType] = [
        meta,
        Panel(Text(pretty_json(run.input)), title="Input", expand=False),
    ]
    if run.error is not None:
        parts.append(
            Panel(Text(_error_text(run.error)), title="Error", border_style="red", expand=False)
        )
    elif run.output is not None or WorkflowRunStatus.parse(run.status).is_completed:
        parts.append(
            Panel(Text(pretty_json(run.output)), title="Output", border_style="green", expand=False)
        )
    parts.append(Text(f"Step attempts ({len(steps)})", style="bold"))
    parts.append(steps_table(steps) if steps else Text("none yet", style="dim"))
    return Group(*parts)


def _error_text(error: Any) -> str:
    if isinstance(error, dict) and isinstance(error.get("stack"), str):
        return str(error["stack"])
    return error_message(error)


def _extra_rows(extras: RunExtras) -> list[tuple[str, str | Text]]:
    rows: list[tuple[str, str | Text]] = []
    if extras.tags:
        rows.append(("Tags", Text(", ".join(f"{k}={v}" for k, v in sorted(extras.tags.items())))))
    if extras.fork is not None:
        fork = extras.fork
        rows.append(("Forked from", Text(f"{fork.forked_from_id} at step {fork.from_step!r}")))
    return rows
