"""The spans of a pass and of its steps (the model is described in :mod:`openworkflow.tracing`).

A pass gets a ``workflow_run.execute`` span whose parent is the trace context
stored with the run, so all passes of a run share its trace; the span is
current while the pass runs. Each step call that does work in the pass gets a
``step_attempt.execute`` span under it, current while the step runs, so spans
made in a step body and the context stored by child runs it starts sit under
the step. A call that the history answers (a completed step, or a final
failure recorded by an earlier pass) is a replay: it gets no span, so a trace
shows each piece of work once, in the pass that did it.

Outcomes (``openworkflow.execution.outcome``) use the original's words where
it has them: ``completed``, ``suspended`` (parked on a wait), ``retrying``
(a step failed and will run again), ``failed``, ``stale`` (the run moved on);
and this port's ``continued_as_new``, ``rate_limited``, ``handed_back`` (an
engine read or write failed) and ``interrupted`` (the pass was cancelled).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from openworkflow import tracing
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.worker.failures import final_failure_of
from openworkflow.worker.interrupts import (
    EngineFault,
    RateLimited,
    StaleBranch,
    StepRetry,
    Suspend,
)
from openworkflow.worker.outcome import (
    Completed,
    ContinuedAsNew,
    Dropped,
    Failed,
    HandedBack,
    Parked,
    PassOutcome,
    Rescheduled,
)
from openworkflow.worker.step_history import StepHistory

if TYPE_CHECKING:  # opentelemetry is imported only once tracing is on (it is optional)
    from opentelemetry.context import Context as OtelContext
    from opentelemetry.trace import Span, Tracer

T = TypeVar("T")

COMPLETED, SUSPENDED, RETRYING, FAILED, STALE = (
    "completed",
    "suspended",
    "retrying",
    "failed",
    "stale",
)
CONTINUED_AS_NEW, RATE_LIMITED, HANDED_BACK, INTERRUPTED = (
    "continued_as_new",
    "rate_limited",
    "handed_back",
    "interrupted",
)


def start_pass(run: WorkflowRun) -> PassTrace | None:
    """The span of a pass over ``run``, or None when tracing is off (one check)."""
    found = tracing.tracer()
    return None if found is None else PassTrace(found, run)


class PassTrace:
    """The ``workflow_run.execute`` span of one pass; ``with`` makes it current."""

    def __init__(self, tracer: Tracer, run: WorkflowRun) -> None:
        from opentelemetry import trace
        from opentelemetry.context import Context

        self._tracer = tracer
        self._run = run
        parent = tracing.stored_parent(run.context) or tracing.run_id_parent(run.id)
        self.span: Span = tracer.start_span(
            tracing.SPAN_RUN_EXECUTE,
            # Never the worker's ambient context: the run's trace, or a new one.
            context=parent if parent is not None else Context(),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                **tracing.run_attributes(run),
                tracing.ATTR_EXECUTION_ATTEMPT: run.attempts,
            },
        )
        self._token: Token[OtelContext] | None = None
        self._recorded: BaseException | None = None

    def __enter__(self) -> PassTrace:
        from opentelemetry import context as otel_context
        from opentelemetry import trace

        self._token = otel_context.attach(trace.set_span_in_context(self.span))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from opentelemetry import context as otel_context

        try:
            if isinstance(exc, asyncio.CancelledError):
                self.span.set_attribute(tracing.ATTR_EXECUTION_OUTCOME, INTERRUPTED)
            elif exc is not None and exc is not self._recorded:  # the final write failed
                tracing.record_error(self.span, exc)
        finally:
            if self._token is not None:
                otel_context.detach(self._token)
            self.span.end()

    def record_outcome(self, outcome: PassOutcome, raised: BaseException | None) -> None:
        """Note how the pass ended; a failure is recorded as the span's error."""
        span = self.span
        match outcome:
            case Completed():
                label = COMPLETED
            case ContinuedAsNew():
                label = CONTINUED_AS_NEW
            case Parked():
                label = RATE_LIMITED if isinstance(raised, RateLimited) else SUSPENDED
            case Dropped():
                label = STALE
            case Rescheduled(error):
                label = RETRYING
                tracing.record_stored_error(span, error)
            case HandedBack(cause):
                label = HANDED_BACK
                tracing.record_error(span, cause)
                self._recorded = cause  # re-raised by the pass: not twice
            case Failed(error):
                label = FAILED
                if isinstance(raised, Exception):
                    tracing.record_error(span, raised)
                else:
                    tracing.record_stored_error(span, error)
        span.set_attribute(tracing.ATTR_EXECUTION_OUTCOME, label)

    async def step(self, call: Awaitable[T], step_name: str, kind: str, history: StepHistory) -> T:
        """Await one step call, under its span unless the history answers it (a replay)."""
        if answered_by_history(history, step_name):
            return await call
        attributes: dict[str, str | int] = {
            tracing.ATTR_WORKFLOW_NAME: self._run.workflow_name,
            tracing.ATTR_RUN_ID: self._run.id,
            tracing.ATTR_STEP_NAME: step_name,
            tracing.ATTR_STEP_KIND: kind,
            tracing.ATTR_STEP_ATTEMPT: history.failed_attempt_count(step_name) + 1,
        }
        with self._tracer.start_as_current_span(
            tracing.SPAN_STEP_EXECUTE,
            attributes=attributes,
            record_exception=False,  # recorded below, by what the exception means
            set_status_on_exception=False,
        ) as span:
            try:
                result = await call
            except BaseException as error:
                _record_step_failure(span, error)
                raise
            finally:
                _record_child(span, history, step_name)
            span.set_attribute(tracing.ATTR_EXECUTION_OUTCOME, COMPLETED)
            return result


def answered_by_history(history: StepHistory, step_name: str) -> bool:
    """Whether a step call is a replay: its result or final failure is already recorded."""
    if history.find_cached(step_name) is not None:
        return True
    failed = history.failed.get(step_name)
    return failed is not None and (
        final_failure_of(failed) is not None or failed.child_workflow_run_id is not None
    )


def _record_step_failure(span: Span, error: BaseException) -> None:
    """Label a step that did not return: parked, retried, cut short or failed."""
    if isinstance(error, Suspend):
        label = SUSPENDED
    elif isinstance(error, RateLimited):
        label = RATE_LIMITED
    elif isinstance(error, StaleBranch):
        label = STALE
    elif isinstance(error, asyncio.CancelledError):
        label = INTERRUPTED
    elif isinstance(error, StepRetry):
        label = RETRYING
        tracing.record_stored_error(span, error.error)
    elif isinstance(error, EngineFault):
        label = HANDED_BACK
        tracing.record_error(span, error.error)
    else:
        label = FAILED
        tracing.record_error(span, error)
    span.set_attribute(tracing.ATTR_EXECUTION_OUTCOME, label)


def _record_child(span: Span, history: StepHistory, step_name: str) -> None:
    """The child run a workflow step started, if any (read from its attempt)."""
    attempt = (
        history.find_cached(step_name)
        or history.running.get(step_name)
        or history.failed.get(step_name)
    )
    if attempt is not None and attempt.child_workflow_run_id is not None:
        span.set_attribute(tracing.ATTR_CHILD_RUN_ID, attempt.child_workflow_run_id)
