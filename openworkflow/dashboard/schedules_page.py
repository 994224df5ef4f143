"""The schedules page (``GET /schedules``) and its Pause, Resume and Trigger now buttons.

Workers store the schedules of the workflows they run; this page lists what
is stored (the same rows as ``ow schedules list``), each with its next tick
(in the schedule's own time zone and relative to the database's clock,
"overdue" when it has passed and no worker served it yet), its last tick and
the run that tick started, and whether it is paused.

Schedule names go into URLs as one percent-encoded path segment
(:func:`~.rendering.segment`), matched by Starlette's ``path`` converter, like
workflow names on :mod:`.workflows_page`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from openworkflow.core.schedule_store import StoredSchedule
from openworkflow.dashboard.actions import checked_form
from openworkflow.dashboard.context import DashboardContext
from openworkflow.dashboard.pauses import paused_by_name
from openworkflow.dashboard.rendering import root_of, segment
from openworkflow.errors import InvalidNameError


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """One line of the schedules page."""

    schedule: StoredSchedule
    explanation: str | None
    """The cron rule in words (cronsim's), None if it cannot say."""
    next_tick: datetime | None
    """None while paused: no tick is due until it is resumed."""
    next_local: str | None
    next_relative: str | None
    overdue: bool
    last_local: str | None
    last_run_status: str | None
    """Status of the run the last created tick started (None if none, or deleted)."""
    workflow_paused: bool


def in_zone(moment: datetime, zone: str) -> str:
    """``2026-03-08 09:00 CET``: the instant as the schedule's wall clock reads it."""
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


def relative(moment: datetime, now: datetime) -> str:
    """``in 4 min``, ``in 2 h 5 min``, ``in 3 days``; ``overdue by 1 min`` once past."""
    delta = moment - now
    if delta < timedelta(0):
        return f"overdue by {_span(-delta)}"
    if delta < timedelta(minutes=1):
        return "in less than a minute"
    return f"in {_span(delta)}"


def _span(delta: timedelta) -> str:
    minutes = max(int(delta.total_seconds() // 60), 1)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} days"


def explain(expression: str) -> str | None:
    """The cron expression in English (cronsim's ``explain()``), None if it fails."""
    try:
        return CronSim(expression, datetime(2000, 1, 1)).explain()
    except (CronSimError, ValueError, KeyError, IndexError):
        return None


async def _run_status(context: DashboardContext, run_id: str | None) -> str | None:
    if run_id is None:
        return None
    run = await context.client.get_run(run_id)
    return None if run is None else run.status


async def schedule_rows(context: DashboardContext) -> list[ScheduleRow]:
    """Every stored schedule of the namespace, by name, judged by the database's clock."""
    snapshot = await context.client.list_schedules()
    paused_workflows = await paused_by_name(context)
    rows = []
    for item in snapshot.schedules:
        tick = None if item.paused_at is not None else item.next_tick()
        last = item.last_tick_at
        rows.append(
            ScheduleRow(
                schedule=item,
                explanation=explain(item.schedule.expression),
                next_tick=tick,
                next_local=None if tick is None else in_zone(tick, item.timezone),
                next_relative=None if tick is None else relative(tick, snapshot.now),
                overdue=tick is not None and tick < snapshot.now,
                last_local=None if last is None else in_zone(last, item.timezone),
                last_run_status=await _run_status(context, item.last_run_id),
                workflow_paused=item.workflow_name in paused_workflows,
            )
        )
    return rows


async def schedules_page(context: DashboardContext, request: Request) -> Response:
    """``GET /schedules``: each stored schedule with its next and last tick, and its buttons."""
    query = request.query_params
    done = next(((verb, query[verb]) for verb in ("paused", "resumed") if verb in query), None)
    return context.pages.render(
        request, "schedules.html", {"rows": await schedule_rows(context), "done": done}
    )


async def pause_schedule(context: DashboardContext, request: Request) -> Response:
    """``POST /schedules/{name}/pause``: no tick starts a run until it is resumed."""
    return await _act_on_schedule(context, request, "paused", context.client.pause_schedule)


async def resume_schedule(context: DashboardContext, request: Request) -> Response:
    """``POST /schedules/{name}/resume``: tick again from now (missed ticks are skipped)."""
    return await _act_on_schedule(context, request, "resumed", context.client.resume_schedule)


async def trigger_schedule(context: DashboardContext, request: Request) -> Response:
    """``POST /schedules/{name}/trigger``: start a run with the schedule's input, show it.

    The run serves no tick; the schedule's own ticks are unchanged.
    """
    await checked_form(context, request)
    name = str(request.path_params["name"])
    try:
        handle = await context.client.trigger_schedule(name)
    except InvalidNameError as error:
        raise HTTPException(400, f"Not a schedule name: {error}.") from None
    if handle is None:
        raise HTTPException(404, _not_stored(name))
    return RedirectResponse(f"{root_of(request)}/runs/{segment(handle.id)}", status_code=303)


async def _act_on_schedule(
    context: DashboardContext,
    request: Request,
    verb: str,
    action: Callable[[str], Awaitable[StoredSchedule | None]],
) -> Response:
    """Check the form against cross-site requests, apply ``action``, show the schedules."""
    await checked_form(context, request)
    name = str(request.path_params["name"])
    try:
        changed = await action(name)
    except InvalidNameError as error:
        raise HTTPException(400, f"Not a schedule name: {error}.") from None
    if changed is None:
        raise HTTPException(404, _not_stored(name))
    target = f"{root_of(request)}/schedules?{urlencode({verb: name})}"
    return RedirectResponse(target, status_code=303)


def _not_stored(name: str) -> str:
    return (
        f"There is no stored schedule named {name!r}. Workers store the schedules of "
        "their workflows when they start."
    )
