"""How a pass ends: one explicit outcome, decided in one place.

A pass ends in exactly one :data:`PassOutcome`. :func:`outcome_of_return` and
:func:`outcome_of_error` decide it from what the workflow function did;
``execution.WorkflowExecution`` turns it into the one fenced write (or none).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from openworkflow.core.error import serialize_error
from openworkflow.core.json import JsonConversionError, JsonValue
from openworkflow.core.retry import (
    DEFAULT_WORKFLOW_RETRY_POLICY,
    ResolvedRetryPolicy,
)
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import (
    BackendError,
    PayloadError,
    StepLimitExceededError,
    WriteConflictError,
)
from openworkflow.payload import to_stored_json
from openworkflow.worker.attempts import AttemptRecorder
from openworkflow.worker.interrupts import (
    ContinueAsNew,
    EngineFault,
    RateLimited,
    StaleBranch,
    StepRetry,
    Suspend,
)

logger = logging.getLogger("openworkflow.worker")


@dataclass(frozen=True, slots=True)
class Completed:
    """The workflow returned ``output`` (stored JSON): the run completes."""

    output: JsonValue


@dataclass(frozen=True, slots=True)
class ContinuedAsNew:
    """The workflow continues as a fresh run with ``input``: start it, link it, complete."""

    input: JsonValue
    concurrency: tuple[str | None, int | None]


@dataclass(frozen=True, slots=True)
class Failed:
    """The run failed with ``error``; ``retry_policy`` decides if the workflow retries."""

    error: JsonValue
    retry_policy: ResolvedRetryPolicy


@dataclass(frozen=True, slots=True)
class Parked:
    """The run waits (sleep, child, signal, a step's rate limit) and is due again at ``until``."""

    until: datetime


@dataclass(frozen=True, slots=True)
class Rescheduled:
    """A step failed and will be retried: the run is due again at ``available_at``."""

    error: JsonValue
    available_at: datetime


@dataclass(frozen=True, slots=True)
class HandedBack:
    """The engine's own read or write failed: nothing is written, the worker backs off.

    The run resumes from its last recorded step once its lease is released or ends.
    """

    cause: BackendError


@dataclass(frozen=True, slots=True)
class Dropped:
    """Nothing to write: the run moved on (canceled, reclaimed) or a stale branch ended."""

    reason: str


PassOutcome = Completed | ContinuedAsNew | Failed | Parked | Rescheduled | HandedBack | Dropped
"""Every way a pass can end (cancellation by the worker is the only other one)."""


def outcome_of_return(output: Any, run: WorkflowRun, policy: ResolvedRetryPolicy) -> PassOutcome:
    """The workflow function returned: complete, unless its output cannot be stored."""
    try:
        return Completed(to_stored_json(output, f"output of workflow {run.workflow_name!r}"))
    except JsonConversionError as error:
        failure = PayloadError(
            f"workflow {run.workflow_name!r} returned a value that cannot be stored as "
            f"JSON: {error}"
        )
        return Failed(serialize_error(failure), policy)


def outcome_of_error(
    error: BaseException,
    run: WorkflowRun,
    recorder: AttemptRecorder | None,
    policy: ResolvedRetryPolicy,
) -> PassOutcome:
    """The workflow function raised ``error`` (already picked from any exception group).

    Cancellation and interpreter exits are not outcomes: they are raised again.
    ``policy`` is the workflow's retry policy, for failures of the workflow itself.
    """
    if isinstance(error, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
        raise error
    interrupted = _outcome_of_interrupt(error, run, recorder)
    if interrupted is not None:
        return interrupted
    limit_error = recorder.step_limit_error if recorder is not None else None
    if limit_error is None and isinstance(error, StepLimitExceededError):
        limit_error = error
    if limit_error is not None:
        return Failed(_serialize_limit(limit_error), DEFAULT_WORKFLOW_RETRY_POLICY)
    if recorder is not None and recorder.failed_step_of(error) is not None:
        # A step's final failure (its retries came before it): the run fails,
        # with no workflow-level retry, as in the original.
        return Failed(serialize_error(error), DEFAULT_WORKFLOW_RETRY_POLICY)
    return Failed(serialize_error(error), policy)


def _outcome_of_interrupt(
    error: BaseException, run: WorkflowRun, recorder: AttemptRecorder | None
) -> PassOutcome | None:
    """The outcome of the engine's own interruptions, or None for any other error."""
    if isinstance(error, StaleBranch):
        return Dropped("a parallel branch wrote after its pass ended")
    if isinstance(error, StepRetry | ContinueAsNew):
        return _outcome_of_ending(error)
    if isinstance(error, EngineFault):
        if isinstance(error.error, WriteConflictError):
            return Dropped(f"the run moved on ({error.error})")
        return HandedBack(error.error)
    if isinstance(error, Suspend | RateLimited):
        return Parked(_park_until(error, run, recorder))
    return None


def _outcome_of_ending(error: StepRetry | ContinueAsNew) -> PassOutcome:
    """A pass that ends on purpose: a step retried later, or the run continuing as new."""
    if isinstance(error, StepRetry):
        return Rescheduled(error.error, error.available_at)
    return ContinuedAsNew(error.input, error.concurrency)


def _park_until(
    error: Suspend | RateLimited, run: WorkflowRun, recorder: AttemptRecorder | None
) -> datetime:
    """When a parked run is due again."""
    if isinstance(error, Suspend):
        # Parallel waits (gather/TaskGroup) each raise their own suspend and the
        # first one raised wins; the recorder has since recorded every sibling
        # wait (close() waited for them), so park until the earliest of all.
        wait = error.wait if recorder is None else recorder.earliest_wait_including(error.wait)
        return wait.resume_at
    return _rate_limited_until(error, run, recorder)


def _rate_limited_until(
    error: RateLimited, run: WorkflowRun, recorder: AttemptRecorder | None
) -> datetime:
    """When a rate-limited run is due again: when the window has room, or earlier.

    Earlier when a sibling wait resumes first, and at the run's deadline at the
    latest (the claim then fails the run with its deadline error).
    """
    until = error.retry_at
    wait = recorder.history.earliest_running_wait() if recorder is not None else None
    if wait is not None and wait.resume_at < until:
        until = wait.resume_at
    if run.deadline_at is not None and run.deadline_at < until:
        until = run.deadline_at
    return until


def _serialize_limit(error: StepLimitExceededError) -> dict[str, Any]:
    return {
        "name": "StepLimitExceededError",
        "message": str(error),
        "code": error.code,
        "limit": error.limit,
        "stepCount": error.step_count,
    }
