"""When something next comes due, for an environment whose every run is parked.

The candidates: a pending run's ``available_at`` (a sleep's end, a retry's
backoff, a signal-wait or child timeout, a rate limit's slot), a run's
``deadline_at``, and the next tick of each schedule the worker serves.
"""

from __future__ import annotations

from datetime import datetime

from openworkflow.core.backend import Backend, ListWorkflowRunsParams
from openworkflow.core.schedule import next_tick
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import InvalidScheduleError
from openworkflow.worker.worker import Worker

_PAGE = 500


async def next_due_time(backend: Backend, worker: Worker, now: datetime) -> datetime | None:
    """The earliest time after ``now`` at which a run or a schedule tick comes due (or None)."""
    candidates = [
        moment
        for run in await _unfinished_runs(backend)
        for moment in (run.available_at, run.deadline_at)
        if moment is not None and moment > now
    ]
    candidates.extend(await _next_ticks(backend, worker, now))
    return min(candidates, default=None)


async def _unfinished_runs(backend: Backend) -> list[WorkflowRun]:
    runs: list[WorkflowRun] = []
    for status in ("pending", "running"):
        after: str | None = None
        while True:
            page = await backend.list_workflow_runs(
                ListWorkflowRunsParams(status=status, limit=_PAGE, after=after)
            )
            runs.extend(page.data)
            after = page.next
            if after is None:
                break
    return runs


async def _next_ticks(backend: Backend, worker: Worker, now: datetime) -> list[datetime]:
    names = [name for item in worker.registry for name in item.spec.schedule_names]
    if not names:
        return []
    ticks = []
    for stored in (await backend.list_schedules(names)).schedules:
        if stored.paused_at is not None:
            continue
        try:
            ticks.append(next_tick(stored.schedule, max(now, stored.first_seen_at)))
        except InvalidScheduleError:
            continue  # the scheduler logs it; nothing comes due from it
    return ticks
