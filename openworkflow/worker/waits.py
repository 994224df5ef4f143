"""Pure rules of the waiting steps: child-workflow outcomes, timeouts, signal outputs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from openworkflow.core.duration import Duration, resolve_time
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import (
    ChildWorkflowCanceledError,
    ChildWorkflowError,
    ChildWorkflowFailedError,
    ChildWorkflowTimeoutError,
)
from openworkflow.worker.step_history import default_wait_timeout_at

CHILD_TIMEOUT_MESSAGE = "Timed out waiting for child workflow to complete"
_COMPLETED = ("completed", "succeeded")
_TERMINAL = ("completed", "succeeded", "failed", "canceled")


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
    finished_late = child.finished_at is not None and child.finished_at > timeout_at
    if now >= timeout_at and (child.status not in _TERMINAL or finished_late):
        return ChildWorkflowTimeoutError(
            CHILD_TIMEOUT_MESSAGE, workflow_run_id=child.id, step_name=step_name
        )
    if child.status in _COMPLETED:
        return child
    if child.status == "failed":
        message = _stored_message(child.error) or f'Child workflow run "{child.id}" failed'
        return ChildWorkflowFailedError(
            message, workflow_run_id=child.id, step_name=step_name, child_error=child.error
        )
    if child.status == "canceled":
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
