"""What waiting for a run's result ends with: its output, or the error it ended with."""

from __future__ import annotations

from typing import Any

from openworkflow.core.duration import Duration, parse_duration_ms
from openworkflow.core.error import error_message
from openworkflow.core.workflow_run import WorkflowRun, WorkflowRunStatus
from openworkflow.errors import WorkflowCanceledError, WorkflowFailedError


def seconds_or_none(timeout: Duration | None) -> float | None:
    """A result timeout in seconds (None: wait indefinitely)."""
    return None if timeout is None else parse_duration_ms(timeout) / 1000


def run_outcome(run: WorkflowRun) -> Any:
    """The output of a finished run.

    Raises:
        WorkflowFailedError: the run failed.
        WorkflowCanceledError: the run was canceled.
    """
    status = WorkflowRunStatus.parse(run.status)
    if status.is_completed:
        return run.output
    if status == WorkflowRunStatus.FAILED:
        raise WorkflowFailedError(
            f"Workflow {run.workflow_name} failed: {error_message(run.error)}",
            workflow_run_id=run.id,
            error=run.error,
        )
    raise WorkflowCanceledError(
        f"Workflow {run.workflow_name} was canceled", workflow_run_id=run.id
    )
