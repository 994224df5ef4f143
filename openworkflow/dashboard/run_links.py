"""Links between runs: a child run's parent, and a step's child run.

A link is shown only within the dashboard's namespace; a parent in another
namespace is named but not linked, and a child there is not linked at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from openworkflow.core.backend import GetStepAttemptParams
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.dashboard.context import DashboardContext


@dataclass(frozen=True, slots=True)
class ParentLink:
    """Where a child run came from: the parent run (when resolvable) and its step."""

    step_attempt_id: str
    run_id: str | None = None
    workflow_name: str | None = None
    step_name: str | None = None
    namespace_id: str | None = None


async def parent_of(context: DashboardContext, run: WorkflowRun) -> ParentLink | None:
    """The run's parent (None for a top-level run)."""
    attempt_id = run.parent_step_attempt_id
    if attempt_id is None:
        return None
    namespace = run.parent_step_attempt_namespace_id
    if namespace is not None and namespace != context.backend.namespace_id:
        return ParentLink(step_attempt_id=attempt_id, namespace_id=namespace)
    attempt = await context.backend.get_step_attempt(
        GetStepAttemptParams(step_attempt_id=attempt_id)
    )
    if attempt is None:
        return ParentLink(step_attempt_id=attempt_id)
    parent = await context.client.get_run(attempt.workflow_run_id)
    return ParentLink(
        step_attempt_id=attempt_id,
        run_id=attempt.workflow_run_id,
        workflow_name=parent.workflow_name if parent is not None else None,
        step_name=attempt.step_name,
    )


def child_link(namespace_id: str, step: StepAttempt) -> str | None:
    """The id of the child run a step started, when it is in ``namespace_id``."""
    if step.child_workflow_run_id is None:
        return None
    namespace = step.child_workflow_run_namespace_id
    if namespace is not None and namespace != namespace_id:
        return None
    return step.child_workflow_run_id
