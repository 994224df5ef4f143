"""The client side of run events: ``handle.get_event(key, timeout=None)``.

A run publishes with ``step.set_event(key, value)``; ``get_event`` returns the
latest value, waiting (polling 50 ms growing to 1 s, woken early when the run
finishes if the worker shares the backend object) until the key is set.
``timeout=None`` waits without a limit. It raises ``EventNotSetError`` when the
run finished without setting the key, ``ResultTimeoutError`` when the timeout
ran out (the run goes on) and ``WorkflowRunNotFoundError`` for no such run.
"""

from __future__ import annotations

from openworkflow.core.backend import Backend, GetWorkflowRunParams
from openworkflow.core.duration import Duration, parse_duration_ms
from openworkflow.core.events import GetRunEventParams, check_event_key
from openworkflow.core.json import JsonValue, is_storable_text
from openworkflow.errors import EventNotSetError, ResultTimeoutError, WorkflowRunNotFoundError
from openworkflow.notifications import RunPoll


async def wait_for_event(
    backend: Backend, run_id: str, key: str, timeout: Duration | None
) -> JsonValue:
    """The value run ``run_id`` set under ``key``, waiting for one (``timeout=None``: no limit).

    Raises:
        EventNotSetError: the run finished without setting ``key``.
        ResultTimeoutError: no value within ``timeout``; the run goes on.
        WorkflowRunNotFoundError: the run does not exist.
    """
    check_event_key(key)
    if not is_storable_text(run_id):
        raise WorkflowRunNotFoundError(run_id)  # no stored id has a NUL: do not ask the database
    poll = RunPoll(backend, None if timeout is None else parse_duration_ms(timeout) / 1000)
    params = GetRunEventParams(workflow_run_id=run_id, key=key)
    while True:
        event = await backend.get_run_event(params)
        if event is not None:
            return event.value
        run = await backend.get_workflow_run(GetWorkflowRunParams(workflow_run_id=run_id))
        if run is None:
            raise WorkflowRunNotFoundError(run_id)
        if run.is_terminal:
            # Only a running run sets events: a read after seeing it finished is final.
            event = await backend.get_run_event(params)
            if event is not None:
                return event.value
            raise EventNotSetError(run_id, key)
        if not await poll.pause(run_id):  # woken early when the run finishes
            raise ResultTimeoutError(
                f"Timed out waiting for event {key!r} of workflow run {run_id}",
                workflow_run_id=run_id,
            )
