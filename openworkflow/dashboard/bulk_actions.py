"""Bulk cancel and retry from the runs list: ``POST /runs/bulk/cancel`` and ``.../retry``.

The list's form posts either the ticked runs (``scope=selected``, one
``run_id`` field each, at most :data:`MAX_SELECTED`) or the list's filter
(``scope=all``: ``status``, ``workflow``, ``tag``). Without ``confirm=yes``
the answer is a confirmation page with the count and a Confirm button (no
JavaScript needed), which posts the same fields again with ``confirm=yes``;
then :mod:`openworkflow.bulk` acts on the runs (a batch at a time, one short
transaction per run) and the list comes back with "Canceled N runs (M
skipped)". Every POST passes the cross-site checks first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from openworkflow.bulk import (
    BulkAction,
    BulkResult,
    RunFilter,
    act_on_runs,
    action_filter,
    bulk_cancel,
    bulk_retry,
    plan_bulk,
)
from openworkflow.core import clock
from openworkflow.core.tags import parse_tags
from openworkflow.core.workflow_run import COUNTED_STATUSES
from openworkflow.dashboard.context import DashboardContext
from openworkflow.dashboard.rendering import root_of
from openworkflow.dashboard.security import CSRF_FIELD

MAX_SELECTED = 1000
"""The most runs one explicit selection may name (larger sets: all matching a filter)."""

_MAX_ID_CHARS = 128
_DONE = {"cancel": "Canceled", "retry": "Retried"}
_COUNT = re.compile(r"[0-9]{1,12}")


@dataclass(frozen=True, slots=True)
class BulkRequest:
    """One bulk form, read and checked."""

    action: BulkAction
    scope: str  # "selected" or "all"
    run_ids: list[str]
    status: str | None
    workflow: str | None
    tags: dict[str, str]
    created_before: datetime | None

    def run_filter(self) -> RunFilter:
        """The list's filter (``scope=all``), bounded as the confirmation counted it."""
        return RunFilter(
            status=self.status,
            workflow_name=self.workflow,
            tags=self.tags or None,
            created_before=self.created_before,
        )

    def list_query(self) -> dict[str, Any]:
        """The runs list's query parameters for this filter."""
        params: dict[str, Any] = {"status": self.status, "workflow": self.workflow}
        params["tag"] = [f"{key}={value}" for key, value in self.tags.items()]
        return {key: value for key, value in params.items() if value}


async def bulk_cancel_runs(context: DashboardContext, request: Request) -> Response:
    """Confirm, then cancel the selected runs or all the runs matching the list's filter."""
    return await _bulk(context, request, "cancel")


async def bulk_retry_runs(context: DashboardContext, request: Request) -> Response:
    """Confirm, then retry the selected runs or all the runs matching the list's filter."""
    return await _bulk(context, request, "retry")


async def _bulk(context: DashboardContext, request: Request, action: BulkAction) -> Response:
    form = await _checked_bulk_form(context, request)
    bulk = _read(form, action)
    if form.get("confirm") != "yes":
        return await _confirmation(context, request, bulk)
    if bulk.scope == "selected":
        result = await act_on_runs(context.client, action, bulk.run_ids)
    else:
        apply = bulk_cancel if action == "cancel" else bulk_retry
        result = await apply(context.client, bulk.run_filter())
    return RedirectResponse(_list_url(request, bulk, result), status_code=303)


async def _checked_bulk_form(context: DashboardContext, request: Request) -> FormData:
    """The POSTed form (room for a full selection), once it passed the cross-site checks."""
    form = await request.form(max_files=0, max_fields=MAX_SELECTED + 20)
    problem = context.pages.csrf.problem(request, form.get(CSRF_FIELD))
    if problem is not None:
        raise HTTPException(403, f"Request refused: {problem}.")
    return form


def _read(form: FormData, action: BulkAction) -> BulkRequest:
    """The form's fields, checked (a 400 page says what is wrong)."""
    scope = str(form.get("scope", ""))
    if scope not in ("selected", "all"):
        raise HTTPException(400, "Unknown bulk scope: use the buttons of the runs list.")
    run_ids = list(dict.fromkeys(str(value) for value in form.getlist("run_id") if value))
    if scope == "selected" and not run_ids:
        raise HTTPException(
            400, "No runs were selected: tick some runs, or act on all runs matching the filter."
        )
    if len(run_ids) > MAX_SELECTED or any(len(run_id) > _MAX_ID_CHARS for run_id in run_ids):
        raise HTTPException(
            400,
            f"At most {MAX_SELECTED} runs can be selected at once: "
            "act on all runs matching a filter instead.",
        )
    status = str(form.get("status", "")) or None
    if status is not None and status not in COUNTED_STATUSES:
        raise HTTPException(400, f"Unknown status {status!r}.")
    try:
        tags = parse_tags(str(text).strip() for text in form.getlist("tag") if str(text).strip())
    except (ValueError, TypeError) as error:
        raise HTTPException(400, f"Bad tag filter: {error}.") from None
    before_text = str(form.get("created_before", ""))
    try:
        created_before = clock.from_iso(before_text) if before_text else None
    except ValueError:
        raise HTTPException(400, "Bad created_before: reload the list and try again.") from None
    workflow = str(form.get("workflow", "")).strip() or None
    return BulkRequest(action, scope, run_ids, status, workflow, tags, created_before)


async def _confirmation(context: DashboardContext, request: Request, bulk: BulkRequest) -> Response:
    """The page asking to confirm, with the count (and the fields to post again)."""
    created_before: str | None = None
    statuses: tuple[str, ...] = ()
    if bulk.scope == "selected":
        count = len(bulk.run_ids)
    else:
        try:
            plan = await plan_bulk(context.client, bulk.action, bulk.run_filter())
        except ValueError as error:
            raise HTTPException(400, f"Bad filter: {error}.") from None
        count = plan.matched
        statuses = action_filter(bulk.action, bulk.run_filter()).statuses()
        before = plan.run_filter.created_before
        created_before = None if before is None else clock.to_iso(before)
    list_url = _list_url(request, bulk, None)
    return context.pages.render(
        request,
        "bulk_confirm.html",
        {
            "bulk": bulk,
            "count": count,
            "statuses": statuses,
            "created_before": created_before,
            "list_url": list_url,
            "tags": [f"{key}={value}" for key, value in bulk.tags.items()],
        },
    )


def _list_url(request: Request, bulk: BulkRequest, result: BulkResult | None) -> str:
    """The runs list with the same filter, and what was done when there is a result."""
    params = bulk.list_query()
    if result is not None:
        params.update(bulk=bulk.action, done=str(result.done), skipped=str(result.skipped))
    return f"{root_of(request)}/" + (f"?{urlencode(params, doseq=True)}" if params else "")


def bulk_message(query: Mapping[str, str]) -> str | None:
    """The list's "Canceled N runs (M skipped)." after a bulk action (from its redirect)."""
    action = query.get("bulk")
    done, skipped = query.get("done", ""), query.get("skipped", "")
    if action not in _DONE or not _COUNT.fullmatch(done) or not _COUNT.fullmatch(skipped):
        return None  # only numbers and a fixed verb: a link cannot make the page say more
    runs = "run" if int(done) == 1 else "runs"
    extra = f" ({int(skipped)} skipped)" if int(skipped) else ""
    return f"{_DONE[action]} {int(done)} {runs}{extra}."
