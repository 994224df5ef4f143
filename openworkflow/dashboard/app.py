"""The dashboard web app: server-rendered pages over one backend, plus metrics.

Pages (Starlette + Jinja2, autoescaped, no build step; everything works
without JavaScript, which only adds live updates and local times):

- ``GET /``: run counts by status, the runs newest first with cursor pages
  (``?limit=25|50|100&after=&before=``) and filters (``?status=&workflow=``).
- ``GET /runs/new`` and ``POST /runs``: the create-run form.
- ``GET /runs/{id}``: a run's metadata, what it waits for, its outcome, a
  timeline of its step attempts (inline SVG) and the steps table.
- ``GET /search?q=ID-OR-PREFIX``: an exact id or a unique prefix goes to the
  run; several matches are listed; none says so.
- ``POST /runs/{id}/cancel`` and ``POST /runs/{id}/retry``.
- ``POST /runs/bulk/cancel`` and ``POST /runs/bulk/retry``: the runs ticked
  in the list, or all matching its filter, after a confirmation page.
- ``GET /workflows``: the known workflows and the paused names, each active
  or paused, with ``POST /workflows/{name}/pause`` and ``.../resume``.
- ``GET /schedules``: the stored schedules with their next and last ticks,
  with ``POST /schedules/{name}/pause``, ``.../resume`` and ``.../trigger``.
- ``GET /api/runs/{id}``: ``{"status", "finished", "updated_at", "attempts"}``.
- ``GET /metrics`` (Prometheus text) and ``GET /healthz`` (``ok`` or 503).

Build it with :func:`create_app` and serve it with any ASGI server
(``ow dashboard`` uses uvicorn, see :mod:`.server`). The app never stops the
backend it is given. The handlers live in :mod:`.run_list`, :mod:`.run_detail`,
:mod:`.actions`, :mod:`.bulk_actions`, :mod:`.workflows_page`, :mod:`.schedules_page`,
:mod:`.api` and :mod:`.monitoring`; this module is the route table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from openworkflow.core.backend import Backend
from openworkflow.core.workflow_definition import Workflow, WorkflowSpec
from openworkflow.dashboard import (
    actions,
    api,
    bulk_actions,
    monitoring,
    run_detail,
    run_list,
    schedules_page,
    workflows_page,
)
from openworkflow.dashboard.catalog import WorkflowCatalog
from openworkflow.dashboard.context import DashboardContext
from openworkflow.dashboard.rendering import PACKAGE, ServerErrorPage
from openworkflow.dashboard.security import (
    BasicAuthMiddleware,
    BasicCredentials,
    BodyLimitMiddleware,
    SecurityHeadersMiddleware,
    credentials_of,
)

MAX_BODY_BYTES = 1024 * 1024
"""Largest accepted request body (a create-run form with its JSON input)."""

Handler = Callable[[DashboardContext, Request], Awaitable[Response]]


def create_app(
    backend: Backend,
    *,
    workflows: Iterable[Workflow | WorkflowSpec] = (),
    auth: BasicCredentials | tuple[str, str] | str | None = None,
) -> Starlette:
    """Build the dashboard for ``backend`` (and its namespace).

    Args:
        backend: An open backend; the app uses it and never stops it.
        workflows: Workflows (or specs) whose input schemas validate the
            create-run form; runs of other names are created unvalidated.
        auth: HTTP Basic credentials required on every path but
            ``/healthz``: ``"user:password"``, ``(user, password)`` or None
            for no authentication.

    Returns:
        The Starlette application.

    Raises:
        ValueError: ``auth`` is a string that is not ``user:password``.
    """
    credentials = credentials_of(auth)
    context = DashboardContext.for_backend(backend, WorkflowCatalog(workflows))
    middleware = [Middleware(SecurityHeadersMiddleware)]
    if credentials is not None:
        middleware.append(Middleware(BasicAuthMiddleware, credentials=credentials))
    middleware.append(Middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES))
    middleware.append(Middleware(ServerErrorPage, pages=context.pages))
    app = Starlette(
        routes=_routes(context),
        middleware=middleware,
        exception_handlers={HTTPException: context.pages.http_error},
    )
    app.state.dashboard = context
    return app


def _routes(context: DashboardContext) -> list[BaseRoute]:
    def route(path: str, handler: Handler, method: str, name: str) -> Route:
        async def endpoint(request: Request) -> Response:
            return await handler(context, request)

        return Route(path, endpoint, methods=[method], name=name)

    return [
        route("/", run_list.run_list, "GET", "index"),
        route("/runs/new", actions.new_run, "GET", "new_run"),
        route("/search", run_list.search, "GET", "search"),
        route("/runs", actions.create_run, "POST", "create_run"),
        # before /runs/{run_id}/...: "bulk" is not a run id here
        route("/runs/bulk/cancel", bulk_actions.bulk_cancel_runs, "POST", "bulk_cancel"),
        route("/runs/bulk/retry", bulk_actions.bulk_retry_runs, "POST", "bulk_retry"),
        route("/runs/{run_id}", run_detail.run_detail, "GET", "run_detail"),
        route("/runs/{run_id}/cancel", actions.cancel_run, "POST", "cancel"),
        route("/runs/{run_id}/retry", actions.retry_run, "POST", "retry"),
        route("/runs/{run_id}/signal", actions.signal_run, "POST", "signal"),
        route("/runs/{run_id}/fork", actions.fork_run, "POST", "fork"),
        route("/workflows", workflows_page.workflows_page, "GET", "workflows"),
        # ``path`` converters: a name may contain slashes (sent as %2F, decoded by then).
        route("/workflows/{name:path}/pause", workflows_page.pause_workflow, "POST", "pause"),
        route("/workflows/{name:path}/resume", workflows_page.resume_workflow, "POST", "resume"),
        route("/schedules", schedules_page.schedules_page, "GET", "schedules"),
        route(
            "/schedules/{name:path}/pause", schedules_page.pause_schedule, "POST", "pause_schedule"
        ),
        route(
            "/schedules/{name:path}/resume",
            schedules_page.resume_schedule,
            "POST",
            "resume_schedule",
        ),
        route(
            "/schedules/{name:path}/trigger",
            schedules_page.trigger_schedule,
            "POST",
            "trigger_schedule",
        ),
        route("/api/runs/{run_id}", api.run_status, "GET", "run_status"),
        route("/metrics", monitoring.serve_metrics, "GET", "metrics"),
        route("/healthz", monitoring.healthz, "GET", "healthz"),
        Mount("/static", StaticFiles(packages=[(PACKAGE, "static")]), name="static"),
    ]


def replace_workflows(app: Starlette, workflows: Iterable[Workflow | WorkflowSpec]) -> None:
    """Give a running dashboard (from :func:`create_app`) a new list of known workflows.

    ``ow dashboard`` calls it when it rediscovers the project's workflows
    (on SIGHUP, which ``ow dev`` sends after each reload).
    """
    context = app.state.dashboard
    if not isinstance(context, DashboardContext):
        raise TypeError("replace_workflows() needs an app made by create_app()")
    context.catalog.use(workflows)


__all__ = ["create_app", "replace_workflows"]
