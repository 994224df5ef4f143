"""OpenTelemetry tracing: one trace per run, across passes, workers, languages and child runs.

Tracing is on when ``opentelemetry-api`` is installed (``pip install
'openworkflow-python[otel]'``) *and* the application has configured a tracer
provider (``opentelemetry.trace.set_tracer_provider``, or
:func:`use_tracer_provider` for this library alone). Otherwise every hook
returns at its first check: nothing is imported, no span is made and no trace
context is stored.

When a run is created (``ow.run``), a ``workflow_run.create`` span is started as
a child of the active span (or as a new root) and its context is stored in
the run's ``context`` column as ``{"traceContext": {"traceparent": ...}}``:
the W3C carrier written by the global propagator, the key and format the
TypeScript original (0.10) uses. Each pass of a worker then starts its
``workflow_run.execute`` span as a child of that stored context, so every
pass, on any worker and in either language, joins the one trace. Span and
attribute names are the original's.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import TYPE_CHECKING

from openworkflow.core.json import JsonValue

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from openworkflow.core.backend import Backend, CreateWorkflowRunParams
    from openworkflow.core.workflow_run import WorkflowRun

TRACE_CONTEXT_KEY = "traceContext"
"""Key of the W3C carrier in a run's ``context`` (the original's)."""

TRACER_NAME = "openworkflow"

SPAN_RUN_CREATE = "workflow_run.create"
SPAN_RUN_EXECUTE = "workflow_run.execute"
SPAN_STEP_EXECUTE = "step_attempt.execute"

ATTR_WORKFLOW_NAME = "openworkflow.workflow.name"
ATTR_WORKFLOW_VERSION = "openworkflow.workflow.version"
ATTR_NAMESPACE_ID = "openworkflow.namespace.id"
ATTR_RUN_ID = "openworkflow.run.id"
ATTR_PARENT_RUN_ID = "openworkflow.parent.run.id"
ATTR_STEP_NAME = "openworkflow.step.name"
ATTR_STEP_KIND = "openworkflow.step.kind"
ATTR_STEP_ATTEMPT = "openworkflow.step.attempt"  # this port's: the step's attempt number
ATTR_CHILD_RUN_ID = "openworkflow.child.run.id"
ATTR_EXECUTION_ATTEMPT = "openworkflow.execution.attempt"
ATTR_EXECUTION_OUTCOME = "openworkflow.execution.outcome"
ATTR_ERROR_TYPE = "error.type"

_override: TracerProvider | None = None
# The provider last seen enabled and its tracer: get_tracer is not free.
_cached: tuple[object, Tracer | None] = (None, None)


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Trace this library with ``provider`` instead of the global one (None: the global).

    For applications that keep a provider of their own, and for tests (the
    global provider can be set only once per process).
    """
    global _override
    _override = provider


def tracer() -> Tracer | None:
    """The library's tracer, or None when tracing is off (the hot paths' only check).

    Off when nobody imported ``opentelemetry.trace`` (then no provider can be
    configured) or the provider is the API's default proxy or no-op one.
    """
    provider: object | None = _override
    if provider is None:
        trace_api = sys.modules.get("opentelemetry.trace")
        if trace_api is None:
            return None
        provider = trace_api.get_tracer_provider()
    cached_provider, cached_tracer = _cached
    if provider is cached_provider:
        return cached_tracer
    return _tracer_of(provider)


def _tracer_of(provider: object) -> Tracer | None:
    """Resolve (and remember) the tracer of a provider seen for the first time."""
    global _cached
    from opentelemetry import trace

    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        # Not remembered: the application may configure a provider later.
        return None
    assert isinstance(provider, trace.TracerProvider)
    found = provider.get_tracer(TRACER_NAME)
    _cached = (provider, found)
    return found


# -- the stored carrier --------------------------------------------------------------------


def current_trace_context() -> JsonValue:
    """``{"traceContext": carrier}`` for the active span, or None (tracing off, no span).

    What a run created now stores, so its passes continue the active trace.
    """
    if tracer() is None:
        return None
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {TRACE_CONTEXT_KEY: dict(carrier)} if carrier else None


def with_trace_context(context: JsonValue, trace_context: JsonValue) -> JsonValue:
    """A run's ``context`` with the trace carrier added (the caller's keys kept)."""
    if trace_context is None:
        return context
    if context is None:
        return trace_context
    if isinstance(context, dict) and isinstance(trace_context, dict):
        return {**context, **trace_context}
    return context  # a context that is not an object has no room for it


def stored_parent(context: JsonValue) -> Context | None:
    """The OpenTelemetry context stored with a run, or None if it has none usable.

    Extracted into an empty context, never the worker's ambient one; a
    malformed carrier counts as none.
    """
    if not isinstance(context, dict):
        return None
    carrier = context.get(TRACE_CONTEXT_KEY)
    if not isinstance(carrier, dict) or not all(
        isinstance(value, str) for value in carrier.values()
    ):
        return None
    from opentelemetry import propagate, trace
    from opentelemetry.context import Context

    extracted = propagate.extract(
        {str(key): str(value) for key, value in carrier.items()}, Context()
    )
    if not trace.get_current_span(extracted).get_span_context().is_valid:
        return None
    return extracted


def run_id_parent(run_id: str) -> Context | None:
    """A parent for the passes of a run that stored no trace context (scheduled, older).

    The trace id is the run's UUID, so its passes still share one trace (under
    a parent span that no process reports); None for an id that is no UUID.
    """
    from opentelemetry import trace

    try:
        trace_id = int(run_id.replace("-", ""), 16)
    except ValueError:
        return None
    span_id = trace_id & 0xFFFF_FFFF_FFFF_FFFF
    if not 0 < trace_id < 1 << 128 or span_id == 0:
        return None
    parent = trace.SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED)
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


# -- spans -------------------------------------------------------------------------------------


def run_attributes(run: WorkflowRun) -> dict[str, str | int]:
    """The identity of a run, as span attributes."""
    attributes: dict[str, str | int] = {
        ATTR_WORKFLOW_NAME: run.workflow_name,
        ATTR_RUN_ID: run.id,
        ATTR_NAMESPACE_ID: run.namespace_id,
    }
    if run.version is not None:
        attributes[ATTR_WORKFLOW_VERSION] = run.version
    return attributes


def record_error(span: Span, error: BaseException | None, message: str | None = None) -> None:
    """Mark the span failed: the exception (when there is one), its type and ERROR status."""
    from opentelemetry.trace import Status, StatusCode

    if error is not None:
        span.record_exception(error)
        span.set_attribute(ATTR_ERROR_TYPE, type(error).__name__)
        message = str(error) if message is None else message
    span.set_status(Status(StatusCode.ERROR, message))


def record_stored_error(span: Span, error: JsonValue) -> None:
    """Mark the span failed from a stored (serialized) error: its name and message."""
    name = error.get("name") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if isinstance(name, str):
        span.set_attribute(ATTR_ERROR_TYPE, name)
    record_error(span, None, message if isinstance(message, str) else None)


async def create_run(backend: Backend, params: CreateWorkflowRunParams) -> WorkflowRun:
    """``backend.create_workflow_run(params)``, traced when tracing is on.

    The run stores the context of its ``workflow_run.create`` span (a child of
    the active span, or a new root), so its passes join that trace.
    """
    found = tracer()
    if found is None:
        return await backend.create_workflow_run(params)
    from opentelemetry.trace import SpanKind

    with found.start_as_current_span(
        SPAN_RUN_CREATE,
        kind=SpanKind.PRODUCER,
        attributes={ATTR_WORKFLOW_NAME: params.workflow_name},
    ) as span:
        context = with_trace_context(params.context, current_trace_context())
        created = await backend.create_workflow_run(dataclasses.replace(params, context=context))
        span.set_attributes(run_attributes(created))
        return created
