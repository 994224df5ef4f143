"""The runs list (``GET /``) and the search by run id or id prefix (``GET /search``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from openworkflow.core.tags import parse_tags
from openworkflow.core.workflow_run import COUNTED_STATUSES, WorkflowRun
from openworkflow.dashboard import pauses, run_page
from openworkflow.dashboard.bulk_actions import MAX_SELECTED, bulk_message
from openworkflow.dashboard.context import DashboardContext
from openworkflow.dashboard.rendering import root_of, segment
from openworkflow.dashboard.run_form import FORM_FIELDS
from openworkflow.dashboard.run_links import ParentLink, parent_of
from openworkflow.errors import InvalidRunIdPrefixError

PAGE_SIZES = (25, 50, 100)
"""Page sizes offered for the runs list; the first is the default."""


@dataclass(frozen=True, slots=True)
class RunRow:
    """One line of the runs list."""

    run: WorkflowRun
    parent: ParentLink | None


def _page_size(text: str | None) -> int:
    try:
        size = int(text or "")
    except ValueError:
        return PAGE_SIZES[0]
    return size if size in PAGE_SIZES else PAGE_SIZES[0]


async def run_list(context: DashboardContext, request: Request) -> Response:
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
    tags = _tag_filter(query.getlist("tag"))
    try:
        page = await context.client.list_runs(
            status=status,
            workflow_name=workflow,
            limit=limit,
            after=after,
            before=before,
            tags=tags or None,
        )
    except ValueError as error:
        raise HTTPException(400, f"{error}. Start again from the first page.") from None
    counts = await context.client.counts()
    paused = await pauses.paused_by_name(context)
    rows = [RunRow(run, await parent_of(context, run)) for run in page.data]

    def page_url(**cursor: str) -> str:
        params: dict[str, Any] = {"status": status, "workflow": workflow}
        if limit != PAGE_SIZES[0]:
            params["limit"] = str(limit)
        params["tag"] = [f"{key}={value}" for key, value in tags.items()]
        kept = {key: value for key, value in {**params, **cursor}.items() if value}
        return f"{root_of(request)}/" + (f"?{urlencode(kept, doseq=True)}" if kept else "")

    return context.pages.render(
        request,
        "index.html",
        {
            "counts": {name: getattr(counts, name) for name in COUNTED_STATUSES},
            "rows": rows,
            "status": status,
            "workflow": workflow or "",
            "limit": limit,
            "page_sizes": PAGE_SIZES,
            "filtered": bool(status or workflow or tags),
            "tags": [f"{key}={value}" for key, value in tags.items()],
            "newer_url": page_url(before=page.prev) if page.prev else None,
            "older_url": page_url(after=page.next) if page.next else None,
            "workflow_names": context.catalog.names(),
            "paused": paused,
            "resume_command": pauses.resume_command,
            "values": {**dict.fromkeys(FORM_FIELDS, ""), "workflow_name": workflow or ""},
            "bulk_message": bulk_message(query),
            "max_selected": MAX_SELECTED,
            "problem": None,
        },
    )


def _tag_filter(texts: list[str]) -> dict[str, str]:
    """The ``?tag=KEY=VALUE`` parameters (repeatable, empty ones ignored) as checked tags."""
    try:
        return parse_tags(text.strip() for text in texts if text.strip())
    except (ValueError, TypeError) as error:
        raise HTTPException(400, f"Bad tag filter: {error}.") from None


async def search(context: DashboardContext, request: Request) -> Response:
    """Find a run by id or id prefix: one match opens it, several are listed."""
    query = request.query_params.get("q", "").strip()
    if not query:
        return RedirectResponse(f"{root_of(request)}/", status_code=303)
    try:
        found = await run_page.search_runs(context.backend, query)
    except InvalidRunIdPrefixError as error:
        page: dict[str, Any] = {"query": query, "search_query": query}
        page.update(problem=str(error), found=None)
        return context.pages.render(request, "search.html", page, status_code=400)
    if found.target is not None:
        target = f"{root_of(request)}/runs/{segment(found.target)}"
        return RedirectResponse(target, status_code=303)
    page = {"query": query, "search_query": query}
    page.update(problem=None, found=found)
    return context.pages.render(request, "search.html", page)
