"""The step attempt record, its kinds and statuses, and the contexts stored with waits."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from openworkflow.core import clock
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
        return self.status in ("completed", "succeeded")


def sleep_context(resume_at: datetime) -> dict[str, str]:
    """Context of a sleep attempt: when it resumes."""
    return {"kind": "sleep", "resumeAt": clock.to_iso(resume_at)}


def workflow_context(timeout_at: datetime | None) -> dict[str, str | None]:
    """Context of a child-workflow attempt: when the parent stops waiting."""
    return {"kind": "workflow", "timeoutAt": clock.to_iso_or_none(timeout_at)}


def signal_wait_context(signal: str, timeout_at: datetime) -> dict[str, str]:
    """Context of a signal wait: which signal, and until when."""
    return {"kind": "signal-wait", "signal": signal, "timeoutAt": clock.to_iso(timeout_at)}


COUNTED_STEP_ATTEMPT_STATUSES = ("running", "completed", "failed")
"""The buckets step attempts are counted in (``succeeded`` counts as completed)."""


def fold_step_attempt_counts(rows: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Fold ``(status, count)`` rows into the three step-attempt buckets.

    The legacy ``succeeded`` counts as completed; unknown statuses are ignored.
    """
    counts = dict.fromkeys(COUNTED_STEP_ATTEMPT_STATUSES, 0)
    for status, count in rows:
        bucket = "completed" if status == StepAttemptStatus.SUCCEEDED else status
        if bucket in counts:
            counts[bucket] += int(count)
    return counts
