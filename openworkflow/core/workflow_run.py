"""The workflow run record, its statuses and the rules about them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from openworkflow.core.json import JsonValue
from openworkflow.errors import InvalidRunStateError, WorkflowRunNotFoundError


class WorkflowRunStatus(StrEnum):
    """Run statuses, with the original's deprecated ones kept readable."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    SLEEPING = "sleeping"  # deprecated: a parked run, treated as running
    SUCCEEDED = "succeeded"  # deprecated: treated as completed
    UNKNOWN = "unknown"  # not stored: what parse() gives for a status this engine does not know

    @classmethod
    def parse(cls, value: str) -> WorkflowRunStatus:
        """The status a stored value means; :attr:`UNKNOWN` for one only another engine writes.

        An unknown status (a newer TypeScript worker's) is neither active nor
        terminal: such a run is never claimed, canceled or retried here.
        """
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN

    @property
    def is_terminal(self) -> bool:
        """Completed (or legacy succeeded), failed or canceled."""
        return self in _TERMINAL

    @property
    def is_completed(self) -> bool:
        """Completed, or the legacy succeeded."""
        return self in (WorkflowRunStatus.COMPLETED, WorkflowRunStatus.SUCCEEDED)

    @property
    def is_active(self) -> bool:
        """Pending, running, or the legacy sleeping: not finished yet."""
        return self in _ACTIVE


_TERMINAL = frozenset(
    {
        WorkflowRunStatus.COMPLETED,
        WorkflowRunStatus.SUCCEEDED,
        WorkflowRunStatus.FAILED,
        WorkflowRunStatus.CANCELED,
    }
)
_ACTIVE = frozenset(
    {WorkflowRunStatus.PENDING, WorkflowRunStatus.RUNNING, WorkflowRunStatus.SLEEPING}
)

ACTIVE_STATUSES = tuple(
    str(status)
    for status in (WorkflowRunStatus.PENDING, WorkflowRunStatus.RUNNING, WorkflowRunStatus.SLEEPING)
)
COUNTED_STATUSES = tuple(
    str(status)
    for status in (
        WorkflowRunStatus.PENDING,
        WorkflowRunStatus.RUNNING,
        WorkflowRunStatus.COMPLETED,
        WorkflowRunStatus.FAILED,
        WorkflowRunStatus.CANCELED,
    )
)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowRun:
    """One execution of a workflow, as stored in ``workflow_runs``."""

    namespace_id: str
    id: str
    workflow_name: str
    version: str | None
    status: str
    idempotency_key: str | None
    config: JsonValue
    context: JsonValue
    input: JsonValue
    output: JsonValue
    error: JsonValue
    attempts: int
    parent_step_attempt_namespace_id: str | None
    parent_step_attempt_id: str | None
    worker_id: str | None
    available_at: datetime | None
    deadline_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    updated_at: datetime
    #: This port's column (the original's rows read as 0): higher is claimed first.
    priority: int = 0
    #: This port's column: the schedule tick the run serves (None for other runs).
    scheduled_at: datetime | None = None
    #: This port's columns, both None for a run without a concurrency limit
    #: (and for the original's runs): its key (``''`` when the workflow's runs
    #: share one) and how many runs of its workflow and key execute at once.
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    #: When its workflow's start rate limit reserved this run's start ahead
    #: (it waited queued until then); None otherwise (this port's column).
    start_granted_at: datetime | None = None
    #: The run this one continued as (``step.continue_as_new``); None otherwise.
    continued_as_id: str | None = None
    #: Not a column: set by a claim when the backend knows whether the run has
    #: step attempts (False lets a fresh run skip reading its history); None
    #: when unknown.
    has_step_attempts: bool | None = field(default=None, compare=False, repr=False)
    #: Not a column: set by a claim when the run was taken over from a worker
    #: whose lease expired (it crashed, hung or lost the database mid-pass).
    lease_expired: bool = field(default=False, compare=False, repr=False)
    #: Not a column: the database's ``NOW()`` to the microsecond when the
    #: statement that returned the run began (``updated_at`` before it is
    #: truncated to milliseconds); set by PostgreSQL claims and lease renewals,
    #: which time it against the worker's clock (``worker/db_clock.py``).
    stamped_at: datetime | None = field(default=None, compare=False, repr=False)
    #: Not a column: the database's clock to the microsecond as that statement
    #: returned the run (``clock_timestamp()``), set by the same statements.
    returned_at: datetime | None = field(default=None, compare=False, repr=False)
    #: Not a column: the worker's own clock (uncorrected, to the microsecond)
    #: as the same statement went out on its connection, after any wait for
    #: one: the database's ``stamped_at`` is later than this by the way there.
    sent_at: datetime | None = field(default=None, compare=False, repr=False)

    @property
    def is_terminal(self) -> bool:
        """Whether the run has finished for good (completed, failed or canceled)."""
        return is_terminal_status(self.status)


NOT_COLUMNS = frozenset(
    {"has_step_attempts", "lease_expired", "stamped_at", "returned_at", "sent_at"}
)
"""The fields of :class:`WorkflowRun` a backend sets from a claim, not stored in a column."""


def is_terminal_status(status: str) -> bool:
    """Return True for completed, failed and canceled (and legacy succeeded)."""
    return WorkflowRunStatus.parse(status).is_terminal


def fold_status_counts(rows: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Fold ``(status, count)`` rows into the five public buckets.

    ``sleeping`` counts as running and ``succeeded`` as completed; unknown
    statuses are ignored, as in the original.
    """
    counts = dict.fromkeys(COUNTED_STATUSES, 0)
    for status, count in rows:
        bucket = {"sleeping": "running", "succeeded": "completed"}.get(status, status)
        if bucket in counts:
            counts[bucket] += int(count)
    return counts


RETRYABLE_STATUSES = (str(WorkflowRunStatus.FAILED), str(WorkflowRunStatus.CANCELED))


def resolve_retry_conflict(workflow_run_id: str, existing: WorkflowRun | None) -> WorkflowRun:
    """Raise the error for a retry that updated no row (missing, or not failed/canceled)."""
    if existing is None:
        raise WorkflowRunNotFoundError(workflow_run_id)
    raise InvalidRunStateError(
        f"Cannot retry workflow run {workflow_run_id} with status {existing.status}: "
        "only failed or canceled runs can be retried"
    )


def resolve_cancel_conflict(workflow_run_id: str, existing: WorkflowRun | None) -> WorkflowRun:
    """Decide what a cancel that updated no row means.

    Returns the run when it is already canceled (cancel is idempotent);
    raises for a missing run or one that already finished.
    """
    if existing is None:
        raise WorkflowRunNotFoundError(workflow_run_id)
    status = WorkflowRunStatus.parse(existing.status)
    if status == WorkflowRunStatus.CANCELED:
        return existing
    if status.is_terminal:
        raise InvalidRunStateError(
            f"Cannot cancel workflow run {workflow_run_id} with status {existing.status}"
        )
    raise InvalidRunStateError("Failed to cancel workflow run")
