"""The workflows page (``GET /workflows``) and its Pause and Resume buttons.

A paused workflow's runs are not claimed by any worker (every version, in the
namespace; passes already running finish). The page lists the workflows this
dashboard knows and every paused name, known or not, with the state of each;
the run list and the run page read :func:`.pauses.paused_by_name` to say why a run of a
paused workflow does not start.

Workflow names go into URLs as one percent-encoded path segment
(:func:`~.rendering.segment`); the routes match them with Starlette's ``path``
converter, so names with slashes, spaces or any Unicode come back intact.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from openworkflow.core.workflow_run import WorkflowRunStatus
from openworkflow.dashboard.actions import checked_form
from openworkflow.dashboard.context import DashboardContext
from openworkflow.dashboard.pauses import paused_by_name, resume_command
from openworkflow.dashboard.rendering import root_of
from openworkflow.errors import InvalidNameError

WAITING_COUNT_LIMIT = 100
"""Pending runs counted for a paused workflow; more are shown as ``100+``."""


@dataclass(frozen=True, slots=True)
class WorkflowRow:
    """One line of the workflows page."""

    name: str
    versions: list[str | None]
    known: bool
    paused_at: datetime | None
    waiting: str | None
    """Pending runs of a paused workflow (``"100+"`` past the limit), None when active."""


async def _waiting(context: DashboardContext, name: str) -> str:
    page = await context.client.list_runs(
        status=WorkflowRunStatus.PENDING, workflow_name=name, limit=WAITING_COUNT_LIMIT
    )
    return f"{len(page.data)}+" if page.next else str(len(page.data))


async def workflow_rows(context: DashboardContext) -> list[WorkflowRow]:
    """Every known workflow and every paused name, sorted by name."""
    paused = await paused_by_name(context)
    versions: dict[str, list[str | None]] = {}
    for spec in context.catalog.specs:
        versions.setdefault(spec.name, []).append(spec.version)
    rows = []
    for name in sorted(set(versions) | set(paused)):
        state = paused.get(name)
        known = sorted(versions.get(name, []), key=lambda version: version or "")
        waiting = None if state is None else await _waiting(context, name)
        paused_at = None if state is None else state.paused_at
        rows.append(WorkflowRow(name, known, name in versions, paused_at, waiting))
    return rows


async def workflows_page(context: DashboardContext, request: Request) -> Response:
    """``GET /workflows``: each workflow's versions and state, with Pause or Resume."""
    query = request.query_params
    done = next(((verb, query[verb]) for verb in ("paused", "resumed") if verb in query), None)
    return context.pages.render(
        request,
        "workflows.html",
        {"rows": await workflow_rows(context), "done": done, "resume_command": resume_command},
    )


async def pause_workflow(context: DashboardContext, request: Request) -> Response:
    """``POST /workflows/{name}/pause``: stop claims of the workflow's runs."""
    return await _act_on_workflow(context, request, "paused", context.client.pause_workflow)


async def resume_workflow(context: DashboardContext, request: Request) -> Response:
    """``POST /workflows/{name}/resume``: let workers claim the workflow's runs again."""
    return await _act_on_workflow(context, request, "resumed", context.client.resume_workflow)


async def _act_on_workflow(
    context: DashboardContext,
    request: Request,
    verb: str,
    action: Callable[[str], Awaitable[object]],
) -> Response:
    """Check the form against cross-site requests, apply ``action``, show the workflows."""
    await checked_form(context, request)
    name = str(request.path_params["name"])
    try:
        await action(name)
    except InvalidNameError as error:
        raise HTTPException(400, f"Not a workflow name: {error}.") from None
    return _back_to_workflows(request, verb, name)


def _back_to_workflows(request: Request, verb: str, name: str) -> Response:
    target = f"{root_of(request)}/workflows?{urlencode({verb: name})}"
    return RedirectResponse(target, status_code=303)
