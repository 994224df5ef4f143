"""Turning templates into pages: the Jinja2 set, the CSRF cookie, and the error pages.

Every page is rendered here, so every page gets the CSRF token (and the
browser its session cookie), cache-busted static URLs and ``no-store``.
Errors are pages too (JSON under ``/api/``); an unexpected exception becomes
a 500 page that leaks nothing (:class:`ServerErrorPage`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from importlib import resources
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openworkflow.core.workflow_run import COUNTED_STATUSES
from openworkflow.dashboard import views
from openworkflow.dashboard.security import CSRF_COOKIE, CSRF_FIELD, CsrfProtection
from openworkflow.errors import BackendUnavailableError

logger = logging.getLogger("openworkflow.dashboard")

PACKAGE = "openworkflow.dashboard"
"""The package holding the dashboard's ``templates`` and ``static`` folders."""

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


def root_of(request: Request) -> str:
    """The path the app is mounted at (``""`` at the server's root), for links."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def segment(value: str) -> str:
    """``value`` quoted as one URL path segment."""
    return quote(value, safe="")


def _asset_versions() -> dict[str, str]:
    """A short content hash per static file, for cache-busting URLs."""
    versions: dict[str, str] = {}
    for entry in resources.files(PACKAGE).joinpath("static").iterdir():
        if entry.is_file():
            versions[entry.name] = hashlib.sha256(entry.read_bytes()).hexdigest()[:10]
    return versions


class PageRenderer:
    """The template set, the CSRF secret and the static files' versions of one app."""

    def __init__(self, namespace_id: str) -> None:
        self.namespace_id = namespace_id
        self.csrf = CsrfProtection()
        self.assets = _asset_versions()
        self.env = Environment(
            loader=PackageLoader(PACKAGE, "templates"),
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
            segment=segment,
        )
        self.env.globals.update(duration=views.format_duration, statuses=COUNTED_STATUSES)

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
        root = root_of(request)
        html = self.env.get_template(template).render(
            {
                "root": root,
                "csrf_field": CSRF_FIELD,
                "csrf_token": self.csrf.token_for(session),
                "namespace": self.namespace_id,
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
        path = request.url.path[len(root_of(request)) :]
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


class ServerErrorPage:
    """Turn an unexpected exception into a 500 page, logged without a traceback.

    The traceback goes to the debug log (``ow dashboard --debug``); the page
    says only that something failed, so no detail of the database leaks.
    """

    def __init__(self, app: ASGIApp, pages: PageRenderer) -> None:
        self.app = app
        self.pages = pages

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; answer 500 if it fails before a response started."""
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
            response = self.pages.error_page(Request(scope), 500, message, None)
            await response(scope, receive, send)
