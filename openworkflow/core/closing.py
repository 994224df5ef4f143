"""Closing a finished run's open step attempts: the error each one is left with.

When a run finishes (completed, failed, canceled, or failed by its deadline)
every step attempt of it still ``running`` (a sleep, a signal wait, a wait
for a child, or a function step abandoned by a crashed pass) is marked
``failed`` in the same transaction, with an error saying why, in the
``{"message": ...}`` shape the original stores for step errors.
"""

from __future__ import annotations

from openworkflow.core.json import JsonValue
from openworkflow.core.workflow_run import WorkflowRunStatus

_REASONS = {
    WorkflowRunStatus.CANCELED: "the run was canceled",
    WorkflowRunStatus.COMPLETED: "the run completed before this step attempt finished",
    WorkflowRunStatus.FAILED: "the run failed before this step attempt finished",
}


def closed_step_attempt_error(run_status: str) -> JsonValue:
    """The error of an attempt left ``running`` by a run that became ``run_status``.

    Raises:
        ValueError: ``run_status`` is not a finished status.
    """
    reason = _REASONS.get(WorkflowRunStatus.parse(run_status))
    if reason is None:
        raise ValueError(
            f"run status {run_status!r} is not finished; use one of {sorted(_REASONS)}"
        )
    return {"message": reason}
