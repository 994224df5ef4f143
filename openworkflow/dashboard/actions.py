"""What the dashboard changes: create a run (the form), cancel, retry, signal or fork one.

Every POST is checked against cross-site requests first (the form's CSRF
token and the request's origin, see :class:`~.security.CsrfProtection`).
A refused action shows the form or the run again with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from openworkflow.dashboard.context import DashboardContext
from openworkflow.dashboard.rendering import root_of, segment
from openworkflow.dashboard.run_detail import render_run_detail
from openworkflow.dashboard.run_form import (
    FORM_FIELDS,
    FormProblem,
    create_from_form,
    form_values,
)
from openworkflow.dashboard.security import CSRF_FIELD
from openworkflow.errors import InvalidRunStateError, OpenWorkflowError, WorkflowRunNotFoundError


def _to_run(request: Request, run_id: str) -> Response:
    return RedirectResponse(f"{root_of(request)}/runs/{segment(run_id)}", status_code=303)


async def checked_form(context: DashboardContext, request: Request) -> FormData:
    """The POSTed form, once it passed the cross-site checks (else a 403 page)."""
    form = await request.form(max_files=0, max_fields=50)
    problem = context.pages.csrf.problem(request, form.get(CSRF_FIELD))
    if problem is not None:
        raise HTTPException(403, f"Request refused: {problem}.")
    return form


def _create_form(
    context: DashboardContext,
    request: Request,
    values: Mapping[str, str],
    problem: FormProblem | None,
    *,
    status_code: int = 200,
) -> Response:
    return context.pages.render(
        request,
        "create.html",
        {
            "values": values,
            "problem": problem,
            "workflows": context.catalog.form_entries(),
            "workflow_names": context.catalog.names(),
        },
        status_code=status_code,
    )


async def new_run(context: DashboardContext, request: Request) -> Response:
    """The create-run form (``?workflow=NAME`` fills in the name)."""
    values = dict.fromkeys(FORM_FIELDS, "")
    values["workflow_name"] = request.query_params.get("workflow", "")
    return _create_form(context, request, values, None)


async def create_run(context: DashboardContext, request: Request) -> Response:
    """Create a run from the form and redirect to it (the form again on errors)."""
    values = form_values(await checked_form(context, request))
    try:
        run_id = await create_from_form(context.client, context.catalog, values)
    except FormProblem as problem:
        return _create_form(context, request, values, problem, status_code=400)
    return _to_run(request, run_id)


async def cancel_run(context: DashboardContext, request: Request) -> Response:
    """Cancel a pending, running or sleeping run, then show it."""
    return await _act_on_run(context, request, "cancel", context.client.cancel)


async def retry_run(context: DashboardContext, request: Request) -> Response:
    """Resume a failed or canceled run (:meth:`OpenWorkflow.retry`), then show it."""
    return await _act_on_run(context, request, "retry", context.client.retry)


async def signal_run(context: DashboardContext, request: Request) -> Response:
    """Send a signal to the run (:meth:`OpenWorkflow.signal`), then show it.

    The form's ``data`` is JSON (empty means null); a bad one, a bad name or a
    finished run shows the run again with the reason.
    """
    run_id = request.path_params["run_id"]
    form = await checked_form(context, request)
    name = str(form.get("signal", "")).strip()
    text = str(form.get("data", "")).strip()
    try:
        data = json.loads(text) if text else None
    except ValueError as error:
        message = f"The signal's data is not JSON ({error}); nothing was sent."
        return await render_run_detail(context, request, run_id, message=message, status_code=400)
    try:
        await context.client.signal(run_id, name, data)
    except WorkflowRunNotFoundError:
        raise HTTPException(404, f"There is no run {run_id!r} to signal.") from None
    except (InvalidRunStateError, OpenWorkflowError, TypeError, ValueError) as error:
        message = f"Signal {name!r} was not sent: {error}"
        return await render_run_detail(context, request, run_id, message=message, status_code=409)
    return _to_run(request, run_id)


async def fork_run(context: DashboardContext, request: Request) -> Response:
    """Fork a finished run from the step the form names (:meth:`OpenWorkflow.fork`); show the fork.

    A run still going on, or a step it never ran, shows the run again with the reason.
    """
    run_id = request.path_params["run_id"]
    form = await checked_form(context, request)
    step_name = str(form.get("step", ""))
    try:
        fork = await context.client.fork(run_id, from_step=step_name)
    except WorkflowRunNotFoundError:
        raise HTTPException(404, f"There is no run {run_id!r} to fork.") from None
    except (InvalidRunStateError, OpenWorkflowError) as error:
        message = f"The run was not forked: {error}"
        return await render_run_detail(context, request, run_id, message=message, status_code=409)
    return _to_run(request, fork.id)


async def _act_on_run(
    context: DashboardContext,
    request: Request,
    verb: str,
    action: Callable[[str], Awaitable[object]],
) -> Response:
    """Check the form, apply ``action`` to the run, and show the run (or why it was refused)."""
    run_id = request.path_params["run_id"]
    await checked_form(context, request)
    try:
        await action(run_id)
    except WorkflowRunNotFoundError:
        raise HTTPException(404, f"There is no run {run_id!r} to {verb}.") from None
    except InvalidRunStateError as error:
        return await render_run_detail(
            context, request, run_id, message=str(error), status_code=409
        )
    return _to_run(request, run_id)
