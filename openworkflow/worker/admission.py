"""What a worker checks before a claimed run's code runs: its concurrency key and its start rate.

- A run of a limited workflow created without its key (``ow.run("name")``
  by name, a child started by name, another service's client, ``ow run
  --force``) was admitted like an unlimited run. The worker that has the code
  computes the key from the stored input and puts the run back in the queue
  with it, so the limit binds it from the next claim on.
- A workflow's ``rate_limit`` counts starts: a run's first pass takes a token
  of the workflow's ``start:`` bucket. Over the limit, a token is reserved at
  the earliest instant the window has room and the run goes back to the queue
  until then, the instant kept on the run (``start_granted_at``); claimed
  again, it starts on it. Nothing fails and no attempt is spent.

Either way the run is put back with its pass and lease undone, before any of
its code runs. A key function that raises fails the run, with a message that
says so: it would raise on every try.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from openworkflow.core.backend import Backend, FailWorkflowRunParams
from openworkflow.core.concurrency import concurrency_columns
from openworkflow.core.flow_control import (
    AcquireRateLimitParams,
    RequeueWorkflowRunParams,
    rate_key_of,
    start_rate_bucket,
)
from openworkflow.core.retry import DEFAULT_WORKFLOW_RETRY_POLICY
from openworkflow.core.workflow_definition import WorkflowSpec
from openworkflow.core.workflow_run import WorkflowRun

logger = logging.getLogger("openworkflow.worker")


async def put_back_before_start(
    backend: Backend, worker_id: str, run: WorkflowRun, spec: WorkflowSpec
) -> bool:
    """Whether ``run`` went back to the queue (or failed) instead of running now."""
    needs_key = spec.concurrency is not None and run.concurrency_key is None
    # A start is a run's first pass; a pass after a crash, a park or a retry is not.
    needs_token = spec.rate_limit is not None and run.attempts == 1 and run.start_granted_at is None
    if not (needs_key or needs_token):
        return False
    parsed: list[Any] = []

    def validated_input() -> Any:
        if not parsed:
            parsed.append(spec.parse_input(run.input))
        return parsed[0]

    try:
        if needs_key:
            key, limit = _concurrency_columns(spec, validated_input)
            await _requeue(backend, worker_id, run, key=key, limit=limit)
            return True
        return await _wait_for_start_token(backend, worker_id, run, spec, validated_input)
    except _KeyFunctionError as error:
        await _fail(backend, worker_id, run, str(error))
        return True


class _KeyFunctionError(Exception):
    """A user's key function (or the stored input it reads) failed."""


def _concurrency_columns(
    spec: WorkflowSpec, validated_input: Callable[[], Any]
) -> tuple[str | None, int | None]:
    try:
        return concurrency_columns(spec.concurrency, validated_input())
    except Exception as error:
        raise _KeyFunctionError(
            f"workflow {spec.name!r}: its concurrency key function failed on the run's input: "
            f"{type(error).__name__}: {error}"
        ) from error


async def _wait_for_start_token(
    backend: Backend,
    worker_id: str,
    run: WorkflowRun,
    spec: WorkflowSpec,
    validated_input: Callable[[], Any],
) -> bool:
    rate_limit = spec.rate_limit
    assert rate_limit is not None
    try:
        key = rate_key_of(rate_limit, validated_input)
    except Exception as error:
        raise _KeyFunctionError(
            f"workflow {spec.name!r}: its rate limit key function failed on the run's input: "
            f"{type(error).__name__}: {error}"
        ) from error
    grant = await backend.reserve_rate_limit(
        AcquireRateLimitParams(
            bucket=start_rate_bucket(spec.name, rate_limit),
            key=key,
            limit=rate_limit.limit,
            per_ms=rate_limit.per_ms,
            workflow_run_id=run.id,
        )
    )
    if grant.granted:
        return False
    await _requeue(backend, worker_id, run, reserved_at=grant.retry_at)
    return True


async def _requeue(
    backend: Backend,
    worker_id: str,
    run: WorkflowRun,
    *,
    key: str | None = None,
    limit: int | None = None,
    reserved_at: datetime | None = None,
) -> None:
    await backend.requeue_workflow_run(
        RequeueWorkflowRunParams(
            workflow_run_id=run.id,
            worker_id=worker_id,
            available_at=reserved_at,
            concurrency_key=key,
            concurrency_limit=limit,
            start_granted_at=reserved_at,
        )
    )


async def _fail(backend: Backend, worker_id: str, run: WorkflowRun, message: str) -> None:
    logger.error("%s (run %s)", message, run.id)
    await backend.fail_workflow_run(
        FailWorkflowRunParams(
            workflow_run_id=run.id,
            worker_id=worker_id,
            error={"message": message},
            retry_policy=DEFAULT_WORKFLOW_RETRY_POLICY,
            attempts=run.attempts,
            deadline_at=run.deadline_at,
            claim_attempt=run.attempts,
        )
    )
