"""The JSON API: a run's status, polled by the run page's live updates."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from openworkflow.dashboard import views
from openworkflow.dashboard.context import DashboardContext


async def run_status(context: DashboardContext, request: Request) -> Response:
    """``GET /api/runs/{run_id}``: ``{"status", "finished", "updated_at", "attempts"}``."""
    run_id = request.path_params["run_id"]
    run = await context.client.get_run(run_id)
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
