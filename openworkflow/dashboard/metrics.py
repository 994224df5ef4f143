"""Prometheus metrics: run and step-attempt counts by status.

- ``openworkflow_workflow_runs{status}``: the original's gauge, one sample for
  each of the five statuses (zeros included; legacy ``sleeping`` counts as
  running and ``succeeded`` as completed).
- ``openworkflow_step_attempts{status}``: step attempts as running,
  completed or failed (legacy ``succeeded`` counts as completed).
- ``openworkflow_workflow_paused{workflow}``: 1 for each paused workflow;
  the family is left out while nothing is paused (an alert on
  ``openworkflow_workflow_paused == 1`` then matches nothing).

Each scrape uses a new :class:`~prometheus_client.CollectorRegistry`, so no
process metrics are mixed in. Counts are read fresh on every scrape while
reading them is quick (under :data:`SLOW_COLLECTION_S`, the usual case: the
backends count small tables exactly and estimate big ones, see
``openworkflow.postgres.counts``). Once a collection is slower than that (a
big SQLite table), its text is kept per backend in this process: served as is
for :data:`SLOW_CACHE_S` seconds, then served while a new collection runs in
the background (so a scrape does not wait for the count), and no longer once
it is :data:`STALE_LIMIT_S` old (that scrape counts and waits).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import weakref
from dataclasses import dataclass

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

SLOW_COLLECTION_S = 0.5
"""A collection taking longer than this is kept and served again (see the module)."""

SLOW_CACHE_S = 5.0
"""How long a slow collection's text is served without collecting again."""

STALE_LIMIT_S = 60.0
"""A slow collection older than this is not served; the scrape collects and waits."""

logger = logging.getLogger("openworkflow.dashboard")


@dataclass(frozen=True, slots=True)
class _Collected:
    body: bytes
    at: float


_last: weakref.WeakKeyDictionary[Backend, _Collected] = weakref.WeakKeyDictionary()
_refreshing: weakref.WeakKeyDictionary[Backend, asyncio.Task[bytes]] = weakref.WeakKeyDictionary()


def _now() -> float:
    """The monotonic clock the reuse window is measured on (tests replace it)."""
    return time.monotonic()


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
    """The exposition text: counted now, or a slow collection's (see the module).

    Raises:
        Exception: whatever the backend raises when the counts cannot be read.
    """
    last = _last.get(backend)
    if last is not None:
        age = _now() - last.at
        if age < SLOW_CACHE_S:
            return last.body
        if age < STALE_LIMIT_S:
            _refresh_in_background(backend)
            return last.body
    return await _collect_and_keep(backend)


def refreshing(backend: Backend) -> bool:
    """Whether a background collection for ``backend`` is under way."""
    return backend in _refreshing


def _refresh_in_background(backend: Backend) -> None:
    if backend in _refreshing:
        return
    task = asyncio.get_running_loop().create_task(_collect_and_keep(backend))
    _refreshing[backend] = task  # also keeps the task referenced until it ends

    def done(finished: asyncio.Task[bytes]) -> None:
        _refreshing.pop(backend, None)
        if not finished.cancelled() and finished.exception() is not None:
            error = finished.exception()
            logger.error("failed to collect metrics: %s: %s", type(error).__name__, error)

    task.add_done_callback(done)


async def _collect_and_keep(backend: Backend) -> bytes:
    started = _now()
    try:
        body = await _collect(backend)
    except BaseException:
        _last.pop(backend, None)  # the next scrape collects again (and reports the failure)
        raise
    finished = _now()
    if finished - started >= SLOW_COLLECTION_S:
        _last[backend] = _Collected(body, finished)
    else:
        _last.pop(backend, None)
    return body


async def _collect(backend: Backend) -> bytes:
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
