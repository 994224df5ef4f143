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
- ``GET /api/runs/{id}``: ``{"status", "finished", "updated_at", "attempts"}``.
- ``GET /metrics`` (Prometheus text) and ``GET /healthz`` (``ok`` or 503).

Build it with :func:`create_app` and serve it with any ASGI server
(``ow dashboard`` uses uvicorn). The app never stops the backend it is given.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined
from pydantic import TypeAdapter
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openworkflow.client import OpenWorkflow
from openworkflow.core import clock
from openworkflow.core.backend import Backend, GetStepAttemptParams, GetWorkflowRunParams
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_definition import Workflow, WorkflowRef, WorkflowSpec, spec_of
from openworkflow.core.workflow_run import (
    ACTIVE_STATUSES,
    COUNTED_STATUSES,
    RETRYABLE_STATUSES,
    WorkflowRun,
)
from openworkflow.dashboard import metrics, run_page, views
from openworkflow.dashboard.security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    BasicAuthMiddleware,
    BasicCredentials,
    BodyLimitMiddleware,
    CsrfProtection,
    SecurityHeadersMiddleware,
    credentials_of,
)
from openworkflow.errors import (
    BackendUnavailableError,
    InputValidationError,
    InvalidDurationError,
    InvalidNameError,
    InvalidRunIdPrefixError,
    InvalidRunStateError,
    PayloadError,
    WorkflowRunNotFoundError,
)

logger = logging.getLogger("openworkflow.dashboard")

PAGE_SIZES = (25, 50, 100)
"""Page sizes offered for the runs list; the first is the default."""

STEP_PAGE_SIZE = 100
"""Step attempts shown per page on a run's page."""

MAX_BODY_BYTES = 1024 * 1024
"""Largest accepted request body (a create-run form with its JSON input)."""

HEALTH_PROBE_RUN_ID = "00000000-0000-0000-0000-000000000000"
"""``/healthz`` looks this id up: one indexed read that proves the database answers."""

FORM_FIELDS = (
    "workflow_name",
    "input",
    "available_at",
    "deadline_at",
    "version",
    "idempotency_key",
    "tz_offset",
)

_NAME_FIELDS = {
    "workflow name": "workflow_name",
    "workflow version": "version",
    "version": "version",
    "idempotency_key": "idempotency_key",
}
"""The form field of each name :class:`InvalidNameError` can refuse."""

_PACKAGE = "openworkflow.dashboard"
_ERROR_TITLES = {
    400: "Bad request",
    401: "Authentication required",
    403: "Request refused",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    500: "Something went wrong",
}


@dataclass(frozen=True, slots=True)
class ParentLink:
    """Where a child run came from: the parent run (when resolvable) and its step."""

    step_attempt_id: str
    run_id: str | None = None
    workflow_name: str | None = None
    step_name: str | None = None
    namespace_id: str | None = None


@dataclass(frozen=True, slots=True)
class RunRow:
    """One line of the runs list."""

    run: WorkflowRun
    parent: ParentLink | None


class FormProblem(Exception):
    """Why the create-run form was refused, for showing next to the form.

    Attributes:
        field: The form field at fault.
        message: What is wrong, for people.
        details: One line per rejected part of the input (schema errors).
    """

    def __init__(self, field: str, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.details = details or []


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
    dashboard = _Dashboard(backend, workflows)
    middleware = [Middleware(SecurityHeadersMiddleware)]
    if credentials is not None:
        middleware.append(Middleware(BasicAuthMiddleware, credentials=credentials))
    middleware.append(Middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES))
    middleware.append(Middleware(_ServerErrorPage, dashboard=dashboard))
    routes = [
        Route("/", dashboard.index, methods=["GET"], name="index"),
        Route("/runs/new", dashboard.new_run, methods=["GET"], name="new_run"),
        Route("/search", dashboard.search, methods=["GET"], name="search"),
        Route("/runs", dashboard.create_run, methods=["POST"], name="create_run"),
        Route("/runs/{run_id}", dashboard.run_detail, methods=["GET"], name="run_detail"),
        Route("/runs/{run_id}/cancel", dashboard.cancel_run, methods=["POST"], name="cancel"),
        Route("/runs/{run_id}/retry", dashboard.retry_run, methods=["POST"], name="retry"),
        Route("/api/runs/{run_id}", dashboard.run_status, methods=["GET"], name="run_status"),
        Route("/metrics", dashboard.metrics, methods=["GET"], name="metrics"),
        Route("/healthz", dashboard.healthz, methods=["GET"], name="healthz"),
        Mount("/static", StaticFiles(packages=[(_PACKAGE, "static")]), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: dashboard.http_error},
    )
    app.state.dashboard = dashboard
    return app


def _asset_versions() -> dict[str, str]:
    """A short content hash per static file, for cache-busting URLs."""
    versions: dict[str, str] = {}
    for entry in resources.files(_PACKAGE).joinpath("static").iterdir():
        if entry.is_file():
            versions[entry.name] = hashlib.sha256(entry.read_bytes()).hexdigest()[:10]
    return versions


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _segment(value: str) -> str:
    return quote(value, safe="")


def _page_size(text: str | None) -> int:
    try:
        size = int(text or "")
    except ValueError:
        return PAGE_SIZES[0]
    return size if size in PAGE_SIZES else PAGE_SIZES[0]


def _schema_of(spec: WorkflowSpec) -> str | None:
    if spec.schema is None:
        return None
    try:
        return views.pretty_json(TypeAdapter(spec.schema).json_schema())
    except Exception:  # a type pydantic validates but cannot describe
        return None


class _Dashboard:
    """The request handlers, sharing one client, template set and CSRF secret."""

    def __init__(self, backend: Backend, workflows: Iterable[Workflow | WorkflowSpec]) -> None:
        self.backend = backend
        self.client = OpenWorkflow(backend)
        self.specs: list[WorkflowSpec] = []
        self._schemas: dict[tuple[str, str | None], str] = {}
        self.use_workflows(workflows)
        self.csrf = CsrfProtection()
        self.assets = _asset_versions()
        self.env = Environment(
            loader=PackageLoader(_PACKAGE, "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            time=views.format_time,
            iso=views.iso_time,
            pretty_json=views.pretty_json,
            status_label=views.status_label,
            error_summary=views.error_summary,
            error_stack=views.error_stack,
            segment=_segment,
        )
        self.env.globals.update(duration=views.format_duration, statuses=COUNTED_STATUSES)

    def use_workflows(self, workflows: Iterable[Workflow | WorkflowSpec]) -> None:
        """Replace the known workflows (names and input schemas of the create-run form)."""
        specs = [spec_of(item) for item in workflows]
        schemas = {
            (spec.name, spec.version): schema
            for spec in specs
            if (schema := _schema_of(spec)) is not None
        }
        self.specs, self._schemas = specs, schemas

    # -- rendering ------------------------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        context: Mapping[str, Any] | None = None,
        *,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> HTMLResponse:
        """Render a page, giving the browser a CSRF session cookie if it has none."""
        session = self.csrf.session_of(request)
        fresh = session is None
        if session is None:
            session = self.csrf.new_session()
        root = _root(request)
        html = self.env.get_template(template).render(
            {
                "root": root,
                "csrf_field": CSRF_FIELD,
                "csrf_token": self.csrf.token_for(session),
                "namespace": self.backend.namespace_id,
                "asset": lambda name: f"{root}/static/{name}?v={self.assets.get(name, '0')}",
                **(context or {}),
            }
        )
        response = HTMLResponse(
            html, status_code=status_code, headers={"Cache-Control": "no-store", **(headers or {})}
        )
        if fresh:
            response.set_cookie(
                CSRF_COOKIE,
                session,
                path=root or "/",
                httponly=True,
                samesite="lax",
                secure=request.url.scheme == "https",
            )
        return response

    def error_page(
        self, request: Request, status_code: int, message: str, headers: Mapping[str, str] | None
    ) -> Response:
        """An error as HTML, or as JSON under ``/api/``."""
        path = request.url.path[len(_root(request)) :]
        if path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=status_code, headers=headers)
        title = _ERROR_TITLES.get(status_code, "Error")
        context = {"status_code": status_code, "title": title, "message": message}
        return self.render(request, "error.html", context, status_code=status_code, headers=headers)

    async def http_error(self, request: Request, exc: Exception) -> Response:
        """The error page for 400, 403, 404, 405, 409 and 413."""
        if not isinstance(exc, HTTPException):  # pragma: no cover - registered for these only
            raise exc
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":
            detail = "There is no page at this address."
        return self.error_page(request, exc.status_code, str(detail), exc.headers)

    # -- pages ----------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        """Counts by status, then the runs newest first (filters, cursor pages)."""
        query = request.query_params
        status = query.get("status") or None
        if status is not None and status not in COUNTED_STATUSES:
            raise HTTPException(
                400, f"Unknown status {status!r}: use one of {', '.join(COUNTED_STATUSES)}."
            )
        workflow = (query.get("workflow") or "").strip() or None
        limit = _page_size(query.get("limit"))
        after = query.get("after") or None
        before = query.get("before") or None
        try:
            page = await self.client.list_runs(
                status=status, workflow_name=workflow, limit=limit, after=after, before=before
            )
        except ValueError as error:
            raise HTTPException(400, f"{error}. Start again from the first page.") from None
        counts = await self.client.counts()
        rows = [RunRow(run, await self._parent_of(run)) for run in page.data]

        def page_url(**cursor: str) -> str:
            params = {"status": status, "workflow": workflow}
            if limit != PAGE_SIZES[0]:
                params["limit"] = str(limit)
            kept = {key: value for key, value in {**params, **cursor}.items() if value}
            return f"{_root(request)}/" + (f"?{urlencode(kept)}" if kept else "")

        return self.render(
            request,
            "index.html",
            {
                "counts": {name: getattr(counts, name) for name in COUNTED_STATUSES},
                "rows": rows,
                "status": status,
                "workflow": workflow or "",
                "limit": limit,
                "page_sizes": PAGE_SIZES,
                "filtered": bool(status or workflow),
                "newer_url": page_url(before=page.prev) if page.prev else None,
                "older_url": page_url(after=page.next) if page.next else None,
                "workflow_names": self._workflow_names(),
                "values": {**dict.fromkeys(FORM_FIELDS, ""), "workflow_name": workflow or ""},
                "problem": None,
            },
        )

    async def run_detail(self, request: Request) -> Response:
        """One run: metadata, input, output or error, step attempts."""
        return await self._detail(request, request.path_params["run_id"])

    async def _detail(
        self, request: Request, run_id: str, *, message: str | None = None, status_code: int = 200
    ) -> Response:
        run = await self.client.get_run(run_id)
        if run is None:
            raise HTTPException(
                404, f"There is no run {run_id!r} in namespace {self.backend.namespace_id!r}."
            )
        query = request.query_params
        after = query.get("steps_after") or None
        before = query.get("steps_before") or None
        try:
            steps = await self.client.list_steps(
                run_id, limit=STEP_PAGE_SIZE, after=after, before=before
            )
        except ValueError as error:
            raise HTTPException(400, f"{error}. Open the run's first page of steps.") from None
        base = f"{_root(request)}/runs/{_segment(run_id)}"
        attempts, truncated = await run_page.all_attempts(self.backend, run_id)
        facts = run_page.run_facts(run, attempts, self.specs, clock.now())
        return self.render(
            request,
            "run.html",
            {
                "run": run,
                **facts,
                "timeline_truncated": truncated,
                "steps": steps.data,
                "child_links": {step.id: self._child_link(step) for step in steps.data},
                "steps_earlier_url": f"{base}?{urlencode({'steps_before': steps.prev})}"
                if steps.prev
                else None,
                "steps_later_url": f"{base}?{urlencode({'steps_after': steps.next})}"
                if steps.next
                else None,
                "parent": await self._parent_of(run),
                "explanation": views.explain_status(run),
                "finished": run.is_terminal,
                "can_cancel": run.status in ACTIVE_STATUSES,
                "can_retry": run.status in RETRYABLE_STATUSES,
                "show_output": run.status in ("completed", "succeeded") or run.output is not None,
                "message": message,
            },
            status_code=status_code,
        )

    async def search(self, request: Request) -> Response:
        """Find a run by id or id prefix: one match opens it, several are listed."""
        query = request.query_params.get("q", "").strip()
        if not query:
            return RedirectResponse(f"{_root(request)}/", status_code=303)
        try:
            found = await run_page.search_runs(self.backend, query)
        except InvalidRunIdPrefixError as error:
            context: dict[str, Any] = {"query": query, "search_query": query}
            context.update(problem=str(error), found=None)
            return self.render(request, "search.html", context, status_code=400)
        if found.target is not None:
            target = f"{_root(request)}/runs/{_segment(found.target)}"
            return RedirectResponse(target, status_code=303)
        context = {"query": query, "search_query": query}
        context.update(problem=None, found=found)
        return self.render(request, "search.html", context)

    async def new_run(self, request: Request) -> Response:
        """The create-run form (``?workflow=NAME`` fills in the name)."""
        values = dict.fromkeys(FORM_FIELDS, "")
        values["workflow_name"] = request.query_params.get("workflow", "")
        return self._create_form(request, values, None)

    async def create_run(self, request: Request) -> Response:
        """Create a run from the form and redirect to it (the form again on errors)."""
        form = await self._checked_form(request)
        values = {name: _text(form, name) for name in FORM_FIELDS}
        try:
            run_id = await self._create(values)
        except FormProblem as problem:
            return self._create_form(request, values, problem, status_code=400)
        return RedirectResponse(f"{_root(request)}/runs/{_segment(run_id)}", status_code=303)

    def _create_form(
        self,
        request: Request,
        values: Mapping[str, str],
        problem: FormProblem | None,
        *,
        status_code: int = 200,
    ) -> Response:
        workflows = [
            {
                "name": spec.name,
                "version": spec.version,
                "schema": self._schemas.get((spec.name, spec.version)),
            }
            for spec in sorted(self.specs, key=lambda spec: (spec.name, spec.version or ""))
        ]
        return self.render(
            request,
            "create.html",
            {
                "values": values,
                "problem": problem,
                "workflows": workflows,
                "workflow_names": self._workflow_names(),
            },
            status_code=status_code,
        )

    async def _create(self, values: Mapping[str, str]) -> str:
        name = values["workflow_name"].strip()
        if not name:
            raise FormProblem("workflow_name", "Enter the name of the workflow to run.")
        data: Any = None
        if values["input"].strip():
            try:
                data = json.loads(values["input"])
            except json.JSONDecodeError as error:
                raise FormProblem(
                    "input",
                    f"The input is not valid JSON: {error.msg} "
                    f"(line {error.lineno}, column {error.colno}).",
                ) from None
        tz_offset = views.parse_tz_offset(values["tz_offset"])
        try:
            available_at = views.parse_when("available_at", values["available_at"], tz_offset)
            deadline_at = views.parse_when("deadline_at", values["deadline_at"], tz_offset)
        except views.FormValueError as error:
            label = "Schedule for" if error.field == "available_at" else "Deadline"
            raise FormProblem(error.field, f"{label}: {error}") from None
        version = values["version"].strip() or None
        ref = self._workflow_ref(name, version)
        try:
            handle = await self.client.run(
                ref,
                data,
                version=version,
                idempotency_key=values["idempotency_key"].strip() or None,
                available_at=available_at,
                deadline_at=deadline_at,
            )
        except InputValidationError as error:
            details = []
            for item in error.errors:
                location = ".".join(str(part) for part in item.get("loc", ()))
                details.append(f"{location or '(input)'}: {item.get('msg', 'invalid')}")
            raise FormProblem("input", str(error), details) from None
        except PayloadError as error:
            raise FormProblem("input", str(error)) from None
        except InvalidNameError as error:
            raise FormProblem(_NAME_FIELDS.get(error.field, "workflow_name"), str(error)) from None
        except InvalidDurationError as error:
            raise FormProblem("available_at", str(error)) from None
        return handle.id

    def _workflow_ref(self, name: str, version: str | None) -> WorkflowRef:
        """The registered spec to validate with, or the bare name when none is known."""
        candidates = [spec for spec in self.specs if spec.name == name]
        if version is not None:
            exact = [spec for spec in candidates if spec.version == version]
            return exact[0] if exact else name
        unversioned = [spec for spec in candidates if spec.version is None]
        if unversioned:
            return unversioned[0]
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            known = ", ".join(sorted(spec.version or "" for spec in candidates))
            raise FormProblem(
                "version", f"Workflow {name!r} has several versions ({known}): choose one."
            )
        return name

    def _workflow_names(self) -> list[str]:
        return sorted({spec.name for spec in self.specs})

    async def cancel_run(self, request: Request) -> Response:
        """Cancel a pending, running or sleeping run, then show it."""
        run_id = request.path_params["run_id"]
        await self._checked_form(request)
        try:
            await self.client.cancel(run_id)
        except WorkflowRunNotFoundError:
            raise HTTPException(404, f"There is no run {run_id!r} to cancel.") from None
        except InvalidRunStateError as error:
            return await self._detail(request, run_id, message=str(error), status_code=409)
        return RedirectResponse(f"{_root(request)}/runs/{_segment(run_id)}", status_code=303)

    async def retry_run(self, request: Request) -> Response:
        """Resume a failed or canceled run (:meth:`OpenWorkflow.retry`), then show it."""
        run_id = request.path_params["run_id"]
        await self._checked_form(request)
        try:
            await self.client.retry(run_id)
        except WorkflowRunNotFoundError:
            raise HTTPException(404, f"There is no run {run_id!r} to retry.") from None
        except InvalidRunStateError as error:
            return await self._detail(request, run_id, message=str(error), status_code=409)
        return RedirectResponse(f"{_root(request)}/runs/{_segment(run_id)}", status_code=303)

    async def _checked_form(self, request: Request) -> FormData:
        form = await request.form(max_files=0, max_fields=50)
        problem = self.csrf.problem(request, form.get(CSRF_FIELD))
        if problem is not None:
            raise HTTPException(403, f"Request refused: {problem}.")
        return form

    # -- links between runs ---------------------------------------------------------------

    async def _parent_of(self, run: WorkflowRun) -> ParentLink | None:
        attempt_id = run.parent_step_attempt_id
        if attempt_id is None:
            return None
        namespace = run.parent_step_attempt_namespace_id
        if namespace is not None and namespace != self.backend.namespace_id:
            return ParentLink(step_attempt_id=attempt_id, namespace_id=namespace)
        attempt = await self.backend.get_step_attempt(
            GetStepAttemptParams(step_attempt_id=attempt_id)
        )
        if attempt is None:
            return ParentLink(step_attempt_id=attempt_id)
        parent = await self.client.get_run(attempt.workflow_run_id)
        return ParentLink(
            step_attempt_id=attempt_id,
            run_id=attempt.workflow_run_id,
            workflow_name=parent.workflow_name if parent is not None else None,
            step_name=attempt.step_name,
        )

    def _child_link(self, step: StepAttempt) -> str | None:
        if step.child_workflow_run_id is None:
            return None
        namespace = step.child_workflow_run_namespace_id
        if namespace is not None and namespace != self.backend.namespace_id:
            return None
        return step.child_workflow_run_id

    # -- machine endpoints ----------------------------------------------------------------

    async def run_status(self, request: Request) -> Response:
        """``{"status", "finished", "updated_at", "attempts"}`` for the live updates."""
        run_id = request.path_params["run_id"]
        run = await self.client.get_run(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return JSONResponse(
            {
                "status": run.status,
                "finished": run.is_terminal,
                "updated_at": views.iso_time(run.updated_at),
                "attempts": run.attempts,
            },
            headers={"Cache-Control": "no-store"},
        )

    async def metrics(self, request: Request) -> Response:
        """Prometheus text: ``openworkflow_workflow_runs{status}``, fresh per scrape."""
        try:
            body = await metrics.render_metrics(self.backend)
        except Exception as error:
            logger.error("failed to collect metrics: %s: %s", type(error).__name__, error)
            return PlainTextResponse(metrics.FAILURE_BODY, status_code=500)
        return Response(
            body,
            media_type=metrics.CONTENT_TYPE,
            headers={"Cache-Control": "no-store"},
        )

    async def healthz(self, request: Request) -> Response:
        """``ok`` when the database answers a query, else 503."""
        try:
            await self.backend.get_workflow_run(
                GetWorkflowRunParams(workflow_run_id=HEALTH_PROBE_RUN_ID)
            )
        except Exception as error:
            logger.warning("health check failed: %s: %s", type(error).__name__, error)
            return PlainTextResponse("unavailable\n", status_code=503)
        return PlainTextResponse("ok", headers={"Cache-Control": "no-store"})


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


class _ServerErrorPage:
    """Turn an unexpected exception into a 500 page, logged without a traceback.

    The traceback goes to the debug log (``ow dashboard --debug``); the page
    says only that something failed, so no detail of the database leaks.
    """

    def __init__(self, app: ASGIApp, dashboard: _Dashboard) -> None:
        self.app = app
        self.dashboard = dashboard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:
            logger.error(
                "%s %s failed: %s: %s",
                scope.get("method"),
                scope.get("path"),
                type(error).__name__,
                error,
            )
            logger.debug("traceback of the failed request", exc_info=True)
            if started:
                raise
            message = (
                "The database cannot be reached right now. Try again in a moment."
                if isinstance(error, BackendUnavailableError)
                else "The request failed unexpectedly; the server log says why."
            )
            response = self.dashboard.error_page(Request(scope), 500, message, None)
            await response(scope, receive, send)


def replace_workflows(app: Starlette, workflows: Iterable[Workflow | WorkflowSpec]) -> None:
    """Give a running dashboard (from :func:`create_app`) a new list of known workflows.

    ``ow dashboard`` calls it when it rediscovers the project's workflows
    (on SIGHUP, which ``ow dev`` sends after each reload).
    """
    dashboard = app.state.dashboard
    if not isinstance(dashboard, _Dashboard):
        raise TypeError("replace_workflows() needs an app made by create_app()")
    dashboard.use_workflows(workflows)


__all__ = ["ParentLink", "RunRow", "create_app", "replace_workflows"]
