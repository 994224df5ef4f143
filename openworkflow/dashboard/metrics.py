"""Prometheus metrics: run and step-attempt counts by status, fresh on every scrape.

- ``openworkflow_workflow_runs{status}``: the original's gauge, one sample for
  each of the five statuses (zeros included; legacy ``sleeping`` counts as
  running and ``succeeded`` as completed).
- ``openworkflow_step_attempts{status}``: step attempts as running,
  completed or failed (legacy ``succeeded`` counts as completed).
- ``openworkflow_workflow_paused{workflow}``: 1 for each paused workflow;
  the family is left out while nothing is paused (an alert on
  ``openworkflow_workflow_paused == 1`` then matches nothing).

Each scrape uses a new :class:`~prometheus_client.CollectorRegistry`, so
nothing is cached and no process metrics are mixed in.
"""

from __future__ import annotations

import dataclasses

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from openworkflow.core.backend import Backend, StepAttemptCounts, WorkflowRunCounts

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format served by ``GET /metrics``."""

FAILURE_BODY = "failed to collect metrics\n"
"""The body of the 500 answer when the counts cannot be read."""

RUNS_METRIC = "openworkflow_workflow_runs"
RUNS_HELP = "Current count of workflow runs in each status."
STEP_ATTEMPTS_METRIC = "openworkflow_step_attempts"
STEP_ATTEMPTS_HELP = "Current count of step attempts in each status."
PAUSED_METRIC = "openworkflow_workflow_paused"
PAUSED_HELP = "1 for each workflow whose runs workers do not claim (ow workflows pause)."


def _gauge(
    registry: CollectorRegistry,
    name: str,
    documentation: str,
    counts: WorkflowRunCounts | StepAttemptCounts,
) -> None:
    gauge = Gauge(name, documentation, ["status"], registry=registry)
    for status, value in dataclasses.asdict(counts).items():
        gauge.labels(status=status).set(value)


async def render_metrics(backend: Backend) -> bytes:
    """Count runs and step attempts and return the exposition text.

    Raises:
        Exception: whatever the backend raises when the counts cannot be read.
    """
    registry = CollectorRegistry(auto_describe=True)
    _gauge(registry, RUNS_METRIC, RUNS_HELP, await backend.count_workflow_runs())
    _gauge(
        registry,
        STEP_ATTEMPTS_METRIC,
        STEP_ATTEMPTS_HELP,
        await backend.count_step_attempts(),
    )
    paused = await backend.list_paused_workflows()
    if paused:
        gauge = Gauge(PAUSED_METRIC, PAUSED_HELP, ["workflow"], registry=registry)
        for item in paused:
            gauge.labels(workflow=item.workflow_name).set(1)
    return generate_latest(registry)
