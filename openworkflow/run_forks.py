"""The client side of forks: ``ow.fork(run_id, from_step=NAME, input=None)``.

The source run must have finished (completed, failed or canceled): forking
a run that still goes on would run its steps twice at once. Which attempts
the fork keeps is :func:`openworkflow.core.forks.attempts_to_copy`; the
backend writes the fork, the copies and the link in one transaction, so a
worker never sees a fork without its copied history.
"""

from __future__ import annotations

from openworkflow.core.backend import Backend, GetWorkflowRunParams, ListStepAttemptsParams
from openworkflow.core.forks import ForkWorkflowRunParams, attempts_to_copy
from openworkflow.core.json import JsonValue, check_name
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.errors import InvalidRunStateError, WorkflowRunNotFoundError

_PAGE = 1000


async def fork_run(
    backend: Backend, run_id: str, from_step: str, input: JsonValue, *, replace_input: bool
) -> str:
    """Fork finished run ``run_id`` from its step ``from_step``; the fork's id.

    Raises:
        WorkflowRunNotFoundError: no such run.
        InvalidRunStateError: the run has not finished.
        ForkStepNotFoundError: the run never ran a step named ``from_step``.
    """
    check_name(from_step, "from_step")
    source = await backend.get_workflow_run(GetWorkflowRunParams(workflow_run_id=run_id))
    if source is None:
        raise WorkflowRunNotFoundError(run_id)
    if not source.is_terminal:
        raise InvalidRunStateError(
            f"workflow run {run_id} is {source.status}: only a finished run can be forked "
            "(cancel it first to rerun it from a step)"
        )
    kept = attempts_to_copy(run_id, await _all_attempts(backend, run_id), from_step)
    return await backend.fork_workflow_run(
        ForkWorkflowRunParams(
            source_run_id=run_id,
            from_step=from_step,
            copied_attempt_ids=[attempt.id for attempt in kept],
            input=input,
            replace_input=replace_input,
        )
    )


async def _all_attempts(backend: Backend, run_id: str) -> list[StepAttempt]:
    attempts: list[StepAttempt] = []
    after: str | None = None
    while True:
        page = await backend.list_step_attempts(
            ListStepAttemptsParams(workflow_run_id=run_id, limit=_PAGE, after=after)
        )
        attempts.extend(page.data)
        if page.next is None:
            return attempts
        after = page.next
