"""Build run and step records from database rows (columns in table order).

Both backends select ``*`` from tables whose column order is the original's
DDL, so one mapping serves both; each backend passes how it decodes JSON and
timestamps (SQLite stores text, PostgreSQL returns Python values).

``workflow_runs`` ends with this port's columns, added by its own migrations
after the original's (``priority`` at index 21, ``scheduled_at`` at 22,
``concurrency_key`` at 23, ``concurrency_limit`` at 24, ``start_granted_at`` at 25,
``continued_as_id`` at 26).
Statements that return more than the row (a claim's flags, a notification)
put those after ``*``, and their readers take them from the end of the row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from openworkflow.core.json import JsonValue
from openworkflow.core.schedule_store import StoredSchedule
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_run import WorkflowRun

JsonDecoder = Callable[[Any], JsonValue]
TimeDecoder = Callable[[Any], datetime]


def workflow_run_from_row(
    row: Sequence[Any],
    load_json: JsonDecoder,
    load_time: TimeDecoder,
    has_step_attempts: bool | None = None,
    lease_expired: bool = False,
    stamped_at: datetime | None = None,
    returned_at: datetime | None = None,
    sent_at: datetime | None = None,
) -> WorkflowRun:
    """Map a ``workflow_runs`` row to a :class:`WorkflowRun`."""
    return WorkflowRun(
        namespace_id=row[0],
        id=row[1],
        workflow_name=row[2],
        version=row[3],
        status=row[4],
        idempotency_key=row[5],
        config=load_json(row[6]),
        context=load_json(row[7]),
        input=load_json(row[8]),
        output=load_json(row[9]),
        error=load_json(row[10]),
        attempts=row[11],
        parent_step_attempt_namespace_id=row[12],
        parent_step_attempt_id=row[13],
        worker_id=row[14],
        available_at=_time_or_none(load_time, row[15]),
        deadline_at=_time_or_none(load_time, row[16]),
        started_at=_time_or_none(load_time, row[17]),
        finished_at=_time_or_none(load_time, row[18]),
        created_at=load_time(row[19]),
        updated_at=load_time(row[20]),
        # NULL (a row written with an explicit NULL) ranks like the default 0.
        priority=row[21] or 0,
        scheduled_at=_time_or_none(load_time, row[22]),
        concurrency_key=row[23],
        concurrency_limit=row[24],
        start_granted_at=_time_or_none(load_time, row[25]),
        continued_as_id=row[26],
        has_step_attempts=has_step_attempts,
        lease_expired=lease_expired,
        stamped_at=stamped_at,
        returned_at=returned_at,
        sent_at=sent_at,
    )


def step_attempt_from_row(
    row: Sequence[Any], load_json: JsonDecoder, load_time: TimeDecoder
) -> StepAttempt:
    """Map a ``step_attempts`` row to a :class:`StepAttempt`."""
    return StepAttempt(
        namespace_id=row[0],
        id=row[1],
        workflow_run_id=row[2],
        step_name=row[3],
        kind=row[4],
        status=row[5],
        config=load_json(row[6]),
        context=load_json(row[7]),
        output=load_json(row[8]),
        error=load_json(row[9]),
        child_workflow_run_namespace_id=row[10],
        child_workflow_run_id=row[11],
        started_at=_time_or_none(load_time, row[12]),
        finished_at=_time_or_none(load_time, row[13]),
        created_at=load_time(row[14]),
        updated_at=load_time(row[15]),
    )


def schedule_from_row(
    row: Sequence[Any], load_json: JsonDecoder, load_time: TimeDecoder
) -> StoredSchedule:
    """Map a ``schedules`` row (the backends' ``SCHEDULE_COLUMNS``, in order) to a schedule."""
    return StoredSchedule(
        name=row[0],
        workflow_name=row[1],
        version=row[2],
        cron=row[3],
        timezone=row[4],
        input=load_json(row[5]),
        overlap=row[6],
        catchup=row[7],
        first_seen_at=load_time(row[8]),
        last_tick_at=_time_or_none(load_time, row[9]),
        last_run_id=row[10],
        paused_at=_time_or_none(load_time, row[11]),
        updated_at=load_time(row[12]),
    )


def _time_or_none(load_time: TimeDecoder, value: Any) -> datetime | None:
    return None if value is None else load_time(value)
