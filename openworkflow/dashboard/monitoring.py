"""What machines watching the dashboard read: ``GET /metrics`` and ``GET /healthz``."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from openworkflow.core.backend import GetWorkflowRunParams
from openworkflow.dashboard import metrics
from openworkflow.dashboard.context import DashboardContext

logger = logging.getLogger("openworkflow.dashboard")

HEALTH_PROBE_RUN_ID = "00000000-0000-0000-0000-000000000000"
"""``/healthz`` looks this id up: one indexed read that proves the database answers."""


async def serve_metrics(context: DashboardContext, request: Request) -> Response:
    """Prometheus text: run, step-attempt and paused gauges (see :mod:`.metrics` on freshness)."""
    try:
        body = await metrics.render_metrics(context.backend)
    except Exception as error:
        logger.error("failed to collect metrics: %s: %s", type(error).__name__, error)
        return PlainTextResponse(metrics.FAILURE_BODY, status_code=500)
    return Response(
        body,
        media_type=metrics.CONTENT_TYPE,
        headers={"Cache-Control": "no-store"},
    )


async def healthz(context: DashboardContext, request: Request) -> Response:
    """``ok`` when the database answers a query, else 503."""
    try:
        await context.backend.get_workflow_run(
            GetWorkflowRunParams(workflow_run_id=HEALTH_PROBE_RUN_ID)
        )
    except Exception as error:
        logger.warning("health check failed: %s: %s", type(error).__name__, error)
        return PlainTextResponse("unavailable\n", status_code=503)
    return PlainTextResponse("ok", headers={"Cache-Control": "no-store"})
