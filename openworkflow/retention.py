"""Pruning finished runs: the batch loop the CLI and the workers share.

``await prune_runs(backend, older_than="30d")`` deletes the completed, failed
and canceled runs that finished more than 30 days ago, batch by batch, and
returns how many went; ``older_than={"completed": "7d", "failed": "30d"}``
gives each status its own age (a status left out is kept). Never a pending,
running or parked run, never a run whose parent is still active or with an
active child; step attempts and the run's signals, messages, events, streams
and tags go with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from datetime import datetime

from openworkflow.core import clock
from openworkflow.core.backend import Backend
from openworkflow.core.duration import Duration, parse_duration_ms
from openworkflow.core.retention import (
    DEFAULT_PRUNE_BATCH,
    PRUNABLE_STATUSES,
    PruneWorkflowRunsParams,
    check_prunable_status,
    parse_retention,
)

__all__ = ["prune_runs", "retention_cutoffs"]


def retention_cutoffs(
    older_than: Duration | Mapping[str, Duration | None],
    statuses: Iterable[str] | None = None,
    *,
    now: datetime | None = None,
) -> dict[str, datetime]:
    """Per status, the instant before which a finished run may be pruned.

    Args:
        older_than: One age for every status of ``statuses``, or a policy
            (``{"completed": "7d", ...}``).
        statuses: With one age: the statuses it applies to (default all three).
            With a policy: only these of its statuses.
        now: The instant ages count back from (default: the clock's now).

    Raises:
        ValueError: an unknown status or an invalid or non-positive age.
    """
    if isinstance(older_than, Mapping):
        ages = parse_retention(older_than)
        if statuses is not None:
            wanted = {check_prunable_status(status) for status in statuses}
            ages = {status: age for status, age in ages.items() if status in wanted}
    else:
        chosen = PRUNABLE_STATUSES if statuses is None else tuple(statuses)
        ages = parse_retention(dict.fromkeys(chosen, older_than))
    base = now if now is not None else clock.now()
    return {status: base - age for status, age in ages.items()}


async def prune_runs(
    backend: Backend,
    older_than: Duration | Mapping[str, Duration | None],
    *,
    statuses: Iterable[str] | None = None,
    workflow_name: str | None = None,
    dry_run: bool = False,
    batch_size: int = DEFAULT_PRUNE_BATCH,
    max_batches: int | None = None,
    pause: Duration = 0,
) -> int:
    """Delete finished runs older than their age, in batches; how many were deleted.

    Args:
        backend: The backend (its namespace) to prune.
        older_than: One age (``"30d"``, seconds, a ``timedelta``) or a policy per
            status (``{"completed": "7d", "failed": "30d", "canceled": "7d"}``).
        statuses: Which finished statuses (default: completed, failed, canceled).
        workflow_name: Only runs of this workflow.
        dry_run: Delete nothing; return how many runs would be deleted now.
        batch_size: Runs per batch (one short transaction each).
        max_batches: Stop after this many batches (None: until none is left).
        pause: Sleep between batches, to leave the database to the workers.

    Raises:
        ValueError: an unknown status, an invalid age or batch size.
    """
    cutoffs = retention_cutoffs(older_than, statuses)
    pause_s = parse_duration_ms(pause) / 1000
    total = 0
    batches = 0
    for status, before in cutoffs.items():
        params = PruneWorkflowRunsParams(
            status=status, finished_before=before, workflow_name=workflow_name, limit=batch_size
        )
        if dry_run:
            total += await backend.count_prunable_workflow_runs(params)
            continue
        while max_batches is None or batches < max_batches:
            if batches and pause_s > 0:
                await asyncio.sleep(pause_s)
            deleted = await backend.prune_workflow_runs(params)
            batches += 1
            total += deleted
            if deleted < batch_size:
                break
    return total
