"""Formatting for the templates, and parsing of the create-run form's values.

Everything here is pure: times, durations and JSON for display, status
explanations, and the schedule fields (a duration such as ``5m`` or a date
and time, local to the browser when it says its offset, else UTC).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from openworkflow.core import clock
from openworkflow.core.duration import parse_duration_ms
from openworkflow.core.error import error_message
from openworkflow.core.workflow_run import WorkflowRun, WorkflowRunStatus
from openworkflow.errors import InvalidDurationError

STATUS_LABELS = {
    "pending": "Pending",
    "running": "Running",
    "sleeping": "Running",
    "completed": "Completed",
    "succeeded": "Completed",
    "failed": "Failed",
    "canceled": "Canceled",
}


def format_time(value: datetime | None) -> str:
    """``2026-01-02 03:04:05 UTC``, or ``—`` for None."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso_time(value: datetime | None) -> str:
    """The machine-readable time for ``<time datetime=...>`` (empty for None)."""
    return "" if value is None else clock.to_iso(value)


def format_duration(start: datetime | None, end: datetime | None) -> str:
    """The time between two instants (``850 ms``, ``1.2 s``, ``3m 04s``), or ``—``."""
    if start is None or end is None:
        return "—"
    seconds = max((end - start).total_seconds(), 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def pretty_json(value: Any) -> str:
    """JSON indented for reading (non-JSON values shown with ``str``)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def error_summary(error: Any) -> str:
    """One line for a stored error (``Name: message``)."""
    return error_message(error)


def error_stack(error: Any) -> str | None:
    """The stored traceback of an error, if it has one."""
    if isinstance(error, dict) and isinstance(error.get("stack"), str):
        return str(error["stack"])
    return None


def status_label(status: str) -> str:
    """The human label of a status (unknown statuses shown as they are)."""
    return STATUS_LABELS.get(status, status)


_EXPLANATIONS = {
    "completed": "Finished successfully.",
    "succeeded": "Finished successfully.",
    "failed": "Failed. Retry resumes it: completed steps are kept, failed steps run again.",
    "canceled": "Canceled. Retry resumes it from where it stopped.",
}


def explain_status(run: WorkflowRun, now: datetime | None = None) -> str:
    """A sentence saying what the run's status means right now."""
    if run.status == WorkflowRunStatus.PENDING:
        current = now or clock.now()
        if run.available_at is not None and run.available_at > current:
            reason = "retrying after an error" if run.error is not None else "scheduled"
            return f"Waiting: {reason}, available from {format_time(run.available_at)}."
        return "Waiting for a worker to pick it up."
    if run.status in (WorkflowRunStatus.RUNNING, WorkflowRunStatus.SLEEPING):
        if run.worker_id is None:
            return "Parked: sleeping or waiting for a child run or a signal; no worker is busy."
        return f"Being executed by worker {run.worker_id}."
    return _EXPLANATIONS.get(run.status, "")


class FormValueError(ValueError):
    """A create-run field that cannot be used; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def parse_tz_offset(text: str | None) -> int | None:
    """The browser's ``Date.getTimezoneOffset()`` (minutes, UTC minus local), or None."""
    if not text:
        return None
    try:
        minutes = int(text)
    except ValueError:
        return None
    return minutes if -24 * 60 < minutes < 24 * 60 else None


def parse_when(field: str, text: str, tz_offset: int | None) -> datetime | str | None:
    """A schedule field: empty (None), a duration from now (``5m``), or a date and time.

    A date and time without an offset is the browser's local time when
    ``tz_offset`` is known, else UTC.

    Raises:
        FormValueError: the text is neither.
    """
    value = text.strip()
    if not value:
        return None
    try:
        parse_duration_ms(value)
    except InvalidDurationError:
        pass
    else:
        return value
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise FormValueError(
            field,
            f"{value!r} is neither a duration (e.g. 30s, 5m, 2h, 1d) nor a date and time "
            "(e.g. 2030-01-31T09:00)",
        ) from None
    if moment.tzinfo is None:
        offset = timedelta(minutes=-(tz_offset or 0))
        moment = moment.replace(tzinfo=timezone(offset))
    return moment.astimezone(UTC)
