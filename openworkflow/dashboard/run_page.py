"""Reading what a run's page and the run search need, on top of :mod:`run_view`.

The run page shows a page of step attempts in its table, but its timeline,
first start and "waiting for" need every attempt: they are read here in
pages, up to :data:`TIMELINE_MAX_ATTEMPTS`. The run's events and the tails of
its streams (:func:`stream_tails`, the last :data:`STREAM_TAIL` items of each)
are read here too, for the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from openworkflow.core.backend import (
    Backend,
    FindWorkflowRunsByIdPrefixParams,
    ListStepAttemptsParams,
)
from openworkflow.core.events import RunEvent
from openworkflow.core.id_prefix import check_run_id_prefix
from openworkflow.core.retry import DEFAULT_WORKFLOW_RETRY_POLICY
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.streams import ReadRunStreamParams, RunStreamExtent, RunStreamItem
from openworkflow.core.workflow_definition import WorkflowSpec
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.dashboard import run_view

TIMELINE_MAX_ATTEMPTS = 1000
"""Step attempts read for the timeline (a run may record 1000 steps, plus retries)."""

SEARCH_LIMIT = 50
"""Runs listed for an id prefix that several runs share."""

STREAM_TAIL = 20
"""The newest items of each stream shown (a stream may hold any number of items)."""

_PAGE = 200


async def all_attempts(backend: Backend, run_id: str) -> tuple[list[StepAttempt], bool]:
    """The run's step attempts oldest first, and whether there were more than the cap."""
    attempts: list[StepAttempt] = []
    after: str | None = None
    while len(attempts) < TIMELINE_MAX_ATTEMPTS:
        page = await backend.list_step_attempts(
            ListStepAttemptsParams(workflow_run_id=run_id, limit=_PAGE, after=after)
        )
        attempts.extend(page.data)
        if page.next is None:
            return attempts, False
        after = page.next
    return attempts[:TIMELINE_MAX_ATTEMPTS], True


def workflow_max_attempts(specs: Sequence[WorkflowSpec], run: WorkflowRun) -> int | None:
    """The registered workflow's retry limit for this run (None if not registered)."""
    for spec in specs:
        if spec.name == run.workflow_name and spec.version == run.version:
            policy = spec.retry_policy
            if policy is None:
                return DEFAULT_WORKFLOW_RETRY_POLICY.maximum_attempts
            return policy.resolve(DEFAULT_WORKFLOW_RETRY_POLICY).maximum_attempts
    return None


def run_facts(
    run: WorkflowRun,
    attempts: Sequence[StepAttempt],
    specs: Sequence[WorkflowSpec],
    now: datetime,
) -> dict[str, Any]:
    """The template values derived from the run and all its attempts."""
    return {
        "first_start": run_view.first_start(run, attempts),
        "duration_text": run_view.duration_text(run, attempts, now),
        "outcome_error": run_view.outcome_error(run),
        "waiting": run_view.waiting_for(
            run, attempts, now, workflow_max_attempts=workflow_max_attempts(specs, run)
        ),
        "timeline": run_view.build_timeline(run, attempts, now),
    }


@dataclass(frozen=True, slots=True)
class SearchResult:
    """What a run search found: ``target`` when it leads to one run, else ``runs``."""

    query: str
    target: str | None
    runs: list[WorkflowRun]
    more: bool


async def search_runs(backend: Backend, query: str) -> SearchResult:
    """Find runs by a whole id or an id prefix (an exact id or a unique prefix is a target).

    Raises:
        InvalidRunIdPrefixError: the query cannot start a run id.
    """
    prefix = check_run_id_prefix(query)
    found = await backend.find_workflow_runs_by_id_prefix(
        FindWorkflowRunsByIdPrefixParams(prefix=prefix, limit=SEARCH_LIMIT + 1)
    )
    exact = next((run.id for run in found if run.id == prefix), None)
    target = exact or (found[0].id if len(found) == 1 else None)
    return SearchResult(prefix, target, found[:SEARCH_LIMIT], len(found) > SEARCH_LIMIT)


def waiting_signals(attempts: Sequence[StepAttempt]) -> list[str]:
    """The signal names the run's running waits are waiting for (for the send form)."""
    names = {
        str(attempt.context.get("signal"))
        for attempt in attempts
        if attempt.kind == "signal-wait"
        and attempt.status == "running"
        and isinstance(attempt.context, dict)
        and attempt.context.get("signal")
    }
    return sorted(names)


async def run_events(backend: Backend, run_id: str) -> list[RunEvent]:
    """Every event the run set (its latest value), by key."""
    return await backend.list_run_events(run_id)


@dataclass(frozen=True, slots=True)
class StreamTail:
    """One stream of a run: how much it holds and its newest ``items``, oldest first."""

    key: str
    count: int
    last_seq: int
    updated_at: datetime | None
    items: list[RunStreamItem]

    @property
    def truncated(self) -> bool:
        """Whether the stream holds more items than ``items`` shows."""
        return self.count > len(self.items)


async def _tail(backend: Backend, run_id: str, extent: RunStreamExtent, limit: int) -> StreamTail:
    items: list[RunStreamItem] = []
    if extent.last_seq > 0:
        # Only the positions after last_seq - limit: an index range, never the whole stream.
        items = await backend.read_run_stream(
            ReadRunStreamParams(
                workflow_run_id=run_id,
                key=extent.key,
                after_seq=max(extent.last_seq - limit, 0),
                limit=limit,
            )
        )
    return StreamTail(extent.key, extent.count, extent.last_seq, extent.updated_at, items)


async def stream_tails(backend: Backend, run_id: str, limit: int = STREAM_TAIL) -> list[StreamTail]:
    """Every stream the run wrote, by key, each with its last ``limit`` items."""
    extents = await backend.list_run_streams(run_id)
    return [await _tail(backend, run_id, extent, limit) for extent in extents]


def fork_points(attempts: Sequence[StepAttempt]) -> set[str]:
    """The first attempt of each step (by id): where a finished run can be forked from."""
    first: dict[str, StepAttempt] = {}
    for attempt in sorted(attempts, key=lambda a: (a.created_at, a.id)):
        first.setdefault(attempt.step_name, attempt)
    return {attempt.id for attempt in first.values()}
