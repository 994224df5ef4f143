"""Retention: pruning finished runs past their age; the backend params and protocol.

A run may be pruned when it is finished (``completed``, ``failed`` or
``canceled``; the original's legacy ``succeeded`` counts as completed), it
finished before the cutoff of its status, no run it waits on or that waits on
it is still active: never a run whose parent is active (the parent replays
the child's step from it) and never a run with an active child (the child
wakes it when it ends; keeping the parent until then also keeps the
pruner's locks away from the rows a finishing child locks). Its step
attempts and this port's rows of the run go with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from openworkflow.core.duration import Duration, parse_duration, setting_duration

PRUNABLE_STATUSES = ("completed", "failed", "canceled")
"""The statuses a run may be pruned in, and the keys of a retention policy."""

STORED_STATUSES = {"completed": ("completed", "succeeded"), "failed": ("failed",)}
"""The stored values each prunable status covers (legacy ``succeeded`` is completed)."""

DEFAULT_PRUNE_BATCH = 500
"""Runs deleted per statement: small enough that no lock is held for long."""

MAX_PRUNE_BATCH = 10_000


def stored_statuses(status: str) -> tuple[str, ...]:
    """The stored status values a prunable ``status`` covers."""
    return STORED_STATUSES.get(status, (status,))


def check_prunable_status(status: str) -> str:
    """``status`` when runs may be pruned in it, else ValueError naming the allowed ones."""
    if status not in PRUNABLE_STATUSES:
        raise ValueError(
            f"cannot prune runs with status {status!r}: only finished runs "
            f"({', '.join(PRUNABLE_STATUSES)}) are pruned"
        )
    return status


def parse_retention(policy: Mapping[str, Duration | None]) -> dict[str, timedelta]:
    """A retention policy (``{"completed": "7d", ...}``) as ages, validated.

    A status left out, or given None, is kept forever. Ages must be positive;
    a bare number (or a string of one) is seconds.

    Raises:
        ValueError: an unknown status or an invalid or non-positive age, naming it.
    """
    ages: dict[str, timedelta] = {}
    for status, value in policy.items():
        check_prunable_status(status)
        if value is None:
            continue
        if isinstance(value, bool):
            raise ValueError(f"{status}: expected a duration such as '7d', got {value!r}")
        try:
            # As in every setting, a bare number is seconds ("86400" is a day).
            age = parse_duration(setting_duration(value) if isinstance(value, str) else value)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{status}: {error}") from None
        if age <= timedelta(0):
            raise ValueError(f"{status}: the age must be positive, got {value!r}")
        ages[status] = age
    return ages


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneWorkflowRunsParams:
    """Input of :meth:`RetentionStore.prune_workflow_runs` (and its count).

    Selects the runs of ``status`` (one of :data:`PRUNABLE_STATUSES`) that
    finished before ``finished_before``, of ``workflow_name`` when given, and
    that may be pruned (see the module docstring). ``limit`` bounds one batch.
    """

    status: str
    finished_before: datetime
    workflow_name: str | None = None
    limit: int = DEFAULT_PRUNE_BATCH

    def __post_init__(self) -> None:
        check_prunable_status(self.status)
        if isinstance(self.limit, bool) or not 1 <= self.limit <= MAX_PRUNE_BATCH:
            raise ValueError(f"limit must be between 1 and {MAX_PRUNE_BATCH}, got {self.limit!r}")


class RetentionStore(Protocol):
    """Pruning of finished runs, part of every :class:`~openworkflow.core.backend.Backend`."""

    async def prune_workflow_runs(self, params: PruneWorkflowRunsParams) -> int:
        """Delete up to ``limit`` prunable runs with their rows; the number deleted.

        One pruner at a time per namespace: a concurrent call waits for the
        batch under way, so each run is deleted (and counted) once.
        """
        ...

    async def count_prunable_workflow_runs(self, params: PruneWorkflowRunsParams) -> int:
        """How many runs :meth:`prune_workflow_runs` would delete, ignoring ``limit``."""
        ...
