"""Durable waits: the context JSON stored with them, and the pure decisions about them.

A wait attempt (``sleep``, ``workflow``, ``signal-wait``) stores in its
``context`` column when it gives up, in the original's shape::

    {"kind": "sleep", "resumeAt": "2026-01-01T00:00:00.000Z"}
    {"kind": "workflow", "timeoutAt": "..." | null}
    {"kind": "signal-wait", "signal": "approve:7", "timeoutAt": "..."}

:class:`WaitContext` is the one place that shape is written and read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from openworkflow.core import clock
from openworkflow.core.duration import Duration, resolve_time
from openworkflow.core.json import JsonValue
from openworkflow.core.step_attempt import StepAttempt, StepAttemptStatus, StepKind
from openworkflow.core.workflow_run import WorkflowRun, WorkflowRunStatus
from openworkflow.errors import (
    ChildWorkflowCanceledError,
    ChildWorkflowError,
    ChildWorkflowFailedError,
    ChildWorkflowTimeoutError,
)

WAIT_KINDS = frozenset({StepKind.SLEEP, StepKind.WORKFLOW, StepKind.SIGNAL_WAIT})
CHILD_TIMEOUT_MESSAGE = "Timed out waiting for child workflow to complete"


@dataclass(frozen=True, slots=True)
class WaitContext:
    """The stored context of a wait: its kind, when it ends, and the signal it waits for.

    ``until`` is a sleep's ``resumeAt`` or another wait's ``timeoutAt`` (None
    when a child wait stored none: the one-year default then applies).
    """

    kind: StepKind
    until: datetime | None
    signal: str | None = None

    def to_json(self) -> dict[str, str | None]:
        """The stored JSON, in the original's shape."""
        if self.kind == StepKind.SLEEP:
            assert self.until is not None
            return {"kind": "sleep", "resumeAt": clock.to_iso(self.until)}
        if self.kind == StepKind.SIGNAL_WAIT:
            assert self.until is not None
            return {
                "kind": "signal-wait",
                "signal": self.signal,
                "timeoutAt": clock.to_iso(self.until),
            }
        return {"kind": "workflow", "timeoutAt": clock.to_iso_or_none(self.until)}

    @classmethod
    def of(cls, attempt: StepAttempt) -> WaitContext | None:
        """Read a wait attempt's context (None for other kinds); bad values read as absent."""
        if attempt.kind not in WAIT_KINDS:
            return None
        kind = StepKind(attempt.kind)
        stored = attempt.context if isinstance(attempt.context, dict) else {}
        key = "resumeAt" if kind == StepKind.SLEEP else "timeoutAt"
        signal = stored.get("signal")
        return cls(
            kind, _time_or_none(stored.get(key)), signal if isinstance(signal, str) else None
        )


def sleep_context(resume_at: datetime) -> JsonValue:
    """Context of a sleep attempt: when it resumes."""
    return WaitContext(StepKind.SLEEP, resume_at).to_json()


def workflow_context(timeout_at: datetime | None) -> JsonValue:
    """Context of a child-workflow attempt: when the parent stops waiting."""
    return WaitContext(StepKind.WORKFLOW, timeout_at).to_json()


def signal_wait_context(signal: str, timeout_at: datetime) -> JsonValue:
    """Context of a signal wait: which signal, and until when."""
    return WaitContext(StepKind.SIGNAL_WAIT, timeout_at, signal).to_json()


def _time_or_none(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return clock.from_iso(value)
    except ValueError:
        return None


def default_wait_timeout_at(base: datetime | None = None) -> datetime:
    """One calendar year after ``base`` (default now), the original's default wait."""
    start = base or clock.now()
    try:
        return start.replace(year=start.year + 1)
    except ValueError:  # 29 February
        return start + timedelta(days=365)


def wait_resume_at(attempt: StepAttempt) -> datetime | None:
    """When a running wait attempt resumes (or gives up), or None for anything else."""
    if attempt.status != StepAttemptStatus.RUNNING:
        return None
    context = WaitContext.of(attempt)
    if context is None:
        return None
    if context.kind == StepKind.SLEEP:
        return context.until
    return context.until or default_wait_timeout_at(attempt.created_at)


def resolve_timeout(timeout: datetime | Duration | None) -> datetime:
    """The absolute end of a wait: a datetime, a duration from now, or one year by default."""
    if timeout is None:
        return default_wait_timeout_at()
    return resolve_time(timeout)


def child_outcome(
    step_name: str,
    child_id: str | None,
    child: WorkflowRun | None,
    timeout_at: datetime,
    now: datetime,
) -> WorkflowRun | ChildWorkflowError | None:
    """Decide a child-workflow step: the completed child, the error to raise, or None to wait."""
    if child is None:
        return ChildWorkflowFailedError(
            f'Child workflow run "{child_id}" of step "{step_name}" does not exist',
            workflow_run_id=child_id,
            step_name=step_name,
        )
    status = WorkflowRunStatus.parse(child.status)
    finished_late = child.finished_at is not None and child.finished_at > timeout_at
    if now >= timeout_at and (not status.is_terminal or finished_late):
        return ChildWorkflowTimeoutError(
            CHILD_TIMEOUT_MESSAGE, workflow_run_id=child.id, step_name=step_name
        )
    if status.is_completed:
        return child
    if status == WorkflowRunStatus.FAILED:
        message = _stored_message(child.error) or f'Child workflow run "{child.id}" failed'
        return ChildWorkflowFailedError(
            message, workflow_run_id=child.id, step_name=step_name, child_error=child.error
        )
    if status == WorkflowRunStatus.CANCELED:
        return ChildWorkflowCanceledError(
            f'Workflow step "{step_name}" failed because child workflow run "{child.id}" '
            "was canceled",
            workflow_run_id=child.id,
            step_name=step_name,
        )
    return None


def child_error_from_attempt(attempt: StepAttempt, step_name: str) -> ChildWorkflowError:
    """Rebuild the error a failed child-workflow attempt stored, to raise it again on replay."""
    error = attempt.error if isinstance(attempt.error, dict) else {}
    message = (
        _stored_message(error) or f'Child workflow run "{attempt.child_workflow_run_id}" failed'
    )
    kind = {
        "ChildWorkflowCanceledError": ChildWorkflowCanceledError,
        "ChildWorkflowTimeoutError": ChildWorkflowTimeoutError,
    }.get(str(error.get("name")))
    if kind is not None:
        return kind(message, workflow_run_id=attempt.child_workflow_run_id, step_name=step_name)
    return ChildWorkflowFailedError(
        message,
        workflow_run_id=attempt.child_workflow_run_id,
        step_name=step_name,
        child_error=error,
    )


def signal_run_ids(output: Any) -> list[str]:
    """The run ids a completed signal-send step stored (``{"workflowRunIds": [...]}``)."""
    if isinstance(output, dict) and isinstance(output.get("workflowRunIds"), list):
        return [str(run_id) for run_id in output["workflowRunIds"]]
    return []


def _stored_message(error: Any) -> str | None:
    if isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"]:
        return str(error["message"])
    return None
