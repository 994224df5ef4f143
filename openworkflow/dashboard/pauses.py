"""Which workflows are paused, for every page that says why a run does not start."""

from __future__ import annotations

import shlex

from openworkflow.core.flow_control import PausedWorkflow
from openworkflow.dashboard.context import DashboardContext


async def paused_by_name(context: DashboardContext) -> dict[str, PausedWorkflow]:
    """The paused workflows of the namespace, by name (one query)."""
    return {item.workflow_name: item for item in await context.client.paused_workflows()}


def resume_command(name: str) -> str:
    """The shell command that resumes ``name`` (quoted for names with spaces and such)."""
    return f"ow workflows resume {shlex.quote(name)}"
