"""Runs of a limited workflow that were created without their concurrency key.

``ow.run("name", ...)`` by name, a child started by name, another service's
client or ``ow run --force`` create a run without the workflow's code at
hand, so without its ``concurrency`` key and limit. The claim admits such a
run like an unlimited one; the worker that has the code computes the key from
the stored input and puts the run back in the queue with it, before any of
the workflow's code runs, so the limit binds it from the next claim on.
"""

from __future__ import annotations

import logging

from openworkflow.core.backend import Backend, FailWorkflowRunParams
from openworkflow.core.concurrency import concurrency_columns
from openworkflow.core.flow_control import RequeueWithConcurrencyParams
from openworkflow.core.retry import DEFAULT_WORKFLOW_RETRY_POLICY
from openworkflow.core.workflow_definition import WorkflowSpec
from openworkflow.core.workflow_run import WorkflowRun

logger = logging.getLogger("openworkflow.worker")


async def requeue_unkeyed_run(
    backend: Backend, worker_id: str, run: WorkflowRun, spec: WorkflowSpec
) -> bool:
    """Queue ``run`` again with its concurrency key if it lacks one; whether it did.

    A key function that raises fails the run (it would raise on every try):
    the error names the workflow and says what the function raised.
    """
    if spec.concurrency is None or run.concurrency_key is not None:
        return False
    try:
        key, limit = concurrency_columns(spec.concurrency, spec.parse_input(run.input))
    except Exception as error:  # the user's key function (or input) is broken
        message = (
            f"workflow {spec.name!r}: its concurrency key function failed on the run's input: "
            f"{type(error).__name__}: {error}"
        )
        logger.error("%s (run %s)", message, run.id)
        await backend.fail_workflow_run(
            FailWorkflowRunParams(
                workflow_run_id=run.id,
                worker_id=worker_id,
                error={"message": message},
                retry_policy=DEFAULT_WORKFLOW_RETRY_POLICY,
                attempts=run.attempts,
                deadline_at=run.deadline_at,
            )
        )
        return True
    assert key is not None and limit is not None  # spec.concurrency is set
    await backend.requeue_with_concurrency(
        RequeueWithConcurrencyParams(
            workflow_run_id=run.id,
            worker_id=worker_id,
            concurrency_key=key,
            concurrency_limit=limit,
        )
    )
    return True
