"""A run's page: metadata, what it waits for, its outcome, events, streams, timeline and steps."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from openworkflow.core import clock
from openworkflow.core.cursor import Page
from openworkflow.core.flow_control import PausedWorkflow
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_run import RETRYABLE_STATUSES, WorkflowRun, WorkflowRunStatus
from openworkflow.dashboard import pauses, run_page, views
from openworkflow.dashboard.context import DashboardContext
from openworkflow.dashboard.rendering import root_of, segment
from openworkflow.dashboard.run_links import child_link, parent_of
from openworkflow.dashboard.run_origin import scheduled_origin

STEP_PAGE_SIZE = 100
"""Step attempts shown per page on a run's page."""


async def run_detail(context: DashboardContext, request: Request) -> Response:
    """``GET /runs/{run_id}``: one run's page."""
    return await render_run_detail(context, request, request.path_params["run_id"])


async def render_run_detail(
    context: DashboardContext,
    request: Request,
    run_id: str,
    *,
    message: str | None = None,
    status_code: int = 200,
) -> Response:
    """The run's page, with ``message`` on top (why an action was refused).

    Raises:
        HTTPException: 404 when there is no such run, 400 for a bad steps cursor.
    """
    run = await context.client.get_run(run_id)
    if run is None:
        raise HTTPException(
            404, f"There is no run {run_id!r} in namespace {context.backend.namespace_id!r}."
        )
    status = WorkflowRunStatus.parse(run.status)
    steps = await _step_page(context, request, run_id)
    base = f"{root_of(request)}/runs/{segment(run_id)}"
    attempts, truncated = await run_page.all_attempts(context.backend, run_id)
    facts = run_page.run_facts(run, attempts, context.catalog.specs, clock.now())
    namespace = context.backend.namespace_id
    return context.pages.render(
        request,
        "run.html",
        {
            "run": run,
            **facts,
            "timeline_truncated": truncated,
            "steps": steps.data,
            "fork_points": run_page.fork_points(attempts) if run.is_terminal else set(),
            "child_links": {step.id: child_link(namespace, step) for step in steps.data},
            "steps_earlier_url": f"{base}?{urlencode({'steps_before': steps.prev})}"
            if steps.prev
            else None,
            "steps_later_url": f"{base}?{urlencode({'steps_after': steps.next})}"
            if steps.next
            else None,
            "parent": await parent_of(context, run),
            "explanation": views.explain_status(run),
            "finished": run.is_terminal,
            "can_cancel": status.is_active,
            "can_retry": run.status in RETRYABLE_STATUSES,
            "waiting_signals": [] if run.is_terminal else run_page.waiting_signals(attempts),
            "show_output": status.is_completed or run.output is not None,
            "message": message,
            **await _origin_and_pause(context, run),
            **await _events_and_streams(context, run_id),
        },
        status_code=status_code,
    )


async def _step_page(context: DashboardContext, request: Request, run_id: str) -> Page[StepAttempt]:
    """The page of step attempts the query asks for (``steps_after`` / ``steps_before``)."""
    query = request.query_params
    try:
        return await context.client.list_steps(
            run_id,
            limit=STEP_PAGE_SIZE,
            after=query.get("steps_after") or None,
            before=query.get("steps_before") or None,
        )
    except ValueError as error:
        raise HTTPException(400, f"{error}. Open the run's first page of steps.") from None


async def _paused(context: DashboardContext, workflow_name: str) -> PausedWorkflow | None:
    """The pause of the run's workflow, if it is paused (why an unfinished run does not move)."""
    return (await pauses.paused_by_name(context)).get(workflow_name)


async def _origin_and_pause(context: DashboardContext, run: WorkflowRun) -> dict[str, Any]:
    """The schedule tick the run serves, and its workflow's pause while it is unfinished."""
    return {
        "scheduled": await scheduled_origin(context, run),
        "paused": None if run.is_terminal else await _paused(context, run.workflow_name),
        "resume_command": pauses.resume_command(run.workflow_name),
    }


async def _events_and_streams(context: DashboardContext, run_id: str) -> dict[str, Any]:
    """The run's events, the last items of its streams, its tags and fork links (hidden if none)."""
    return {
        "events": await run_page.run_events(context.backend, run_id),
        "streams": await run_page.stream_tails(context.backend, run_id),
        "tags": await context.backend.get_run_tags(run_id),
        "fork": await context.backend.get_run_fork(run_id),
        "forks": await context.backend.list_run_forks(run_id),
    }
