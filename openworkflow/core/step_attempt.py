"""The step attempt record, its kinds and statuses (wait contexts: ``core.waits``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from openworkflow.core.json import JsonValue


class StepKind(StrEnum):
    """What a step does; the values are the original's."""

    FUNCTION = "function"
    SLEEP = "sleep"
    WORKFLOW = "workflow"
    SIGNAL_SEND = "signal-send"
    SIGNAL_WAIT = "signal-wait"


class StepAttemptStatus(StrEnum):
    """Step attempt statuses; ``succeeded`` is the original's deprecated ``completed``."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SUCCEEDED = "succeeded"
    UNKNOWN = "unknown"  # not stored: what parse() gives for a status this engine does not know

    @classmethod
    def parse(cls, value: str) -> StepAttemptStatus:
        """The status a stored value means; :attr:`UNKNOWN` for one only another engine writes."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN

    @property
    def is_completed(self) -> bool:
        """Completed, or the legacy succeeded."""
        return self in (StepAttemptStatus.COMPLETED, StepAttemptStatus.SUCCEEDED)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepAttempt:
    """One attempt at one step of a run, as stored in ``step_attempts``."""

    namespace_id: str
    id: str
    workflow_run_id: str
    step_name: str
    kind: str
    status: str
    config: JsonValue
    context: JsonValue
    output: JsonValue
    error: JsonValue
    child_workflow_run_namespace_id: str | None
    child_workflow_run_id: str | None
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def is_completed(self) -> bool:
        """Whether the attempt completed (legacy ``succeeded`` included)."""
        return StepAttemptStatus.parse(self.status).is_completed


COUNTED_STEP_ATTEMPT_STATUSES = tuple(
    str(status)
    for status in (StepAttemptStatus.RUNNING, StepAttemptStatus.COMPLETED, StepAttemptStatus.FAILED)
)
"""The buckets step attempts are counted in (``succeeded`` counts as completed)."""


def fold_step_attempt_counts(rows: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Fold ``(status, count)`` rows into the three step-attempt buckets.

    The legacy ``succeeded`` counts as completed; unknown statuses are ignored.
    """
    counts = dict.fromkeys(COUNTED_STEP_ATTEMPT_STATUSES, 0)
    for status, count in rows:
        parsed = StepAttemptStatus.parse(status)
        bucket = StepAttemptStatus.COMPLETED if parsed.is_completed else parsed
        if bucket in counts:
            counts[bucket] += int(count)
    return counts
