"""OpenTelemetry tracing, end to end on every backend, with the SDK's in-memory exporter.

The tracer provider is handed to the library with ``use_tracer_provider`` (the
global provider can be set only once per process, and other tests must run
untraced). Checked: the create, pass and step spans and their attributes; one
trace per run across passes (a run that parks and resumes), replays (a
replayed step has no span), child runs and a client span around ``ow.run``;
errors recorded on the spans; the stored ``traceContext`` carrier (the
original's key and W3C format), and what a pass does with a foreign, missing
or malformed one; and that with tracing off nothing is traced or stored.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from openworkflow import OpenWorkflow, RetryPolicy, Step, WorkflowFailedError, workflow
from openworkflow.core.backend import CreateWorkflowRunParams
from openworkflow.tracing import use_tracer_provider
from tests.support.waiting import wait_until
from tests.worker.helpers import running_worker, wait_for_parked

EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))

CREATE, EXECUTE, STEP = "workflow_run.create", "workflow_run.execute", "step_attempt.execute"
OUTCOME, STEP_NAME = "openworkflow.execution.outcome", "openworkflow.step.name"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Trace the library into the in-memory exporter for one test."""
    EXPORTER.clear()
    use_tracer_provider(PROVIDER)
    try:
        yield EXPORTER
    finally:
        use_tracer_provider(None)
        EXPORTER.clear()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def attr(span: ReadableSpan, key: str) -> Any:
    assert span.attributes is not None
    return span.attributes.get(key)


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def traceparent_of(span: ReadableSpan) -> str:
    """The W3C ``traceparent`` header naming the span (version 00; sampled)."""
    assert span.context is not None and span.context.trace_flags.sampled
    flags = int(span.context.trace_flags)
    return f"00-{trace_id(span):032x}-{span_id(span):016x}-{flags:02x}"


def passes_of(exporter: InMemorySpanExporter, run_id: str) -> list[ReadableSpan]:
    found = [s for s in named(exporter, EXECUTE) if attr(s, "openworkflow.run.id") == run_id]
    return sorted(found, key=lambda span: span.start_time or 0)


async def passes_ended(exporter: InMemorySpanExporter, run_id: str, count: int) -> None:
    """Wait until ``count`` passes of the run have ended (spans end after the final write)."""
    await wait_until(
        lambda: len(passes_of(exporter, run_id)) >= count, message=f"{count} passes of {run_id}"
    )


@workflow(name="trace-two-steps")
async def two_steps(input: int, step: Step) -> int:
    doubled = await step.run("double", lambda: input * 2)
    return await step.run("add-one", lambda: doubled + 1)


@workflow(name="trace-waits")
async def waits_for_signal(step: Step) -> Any:
    before = await step.run("before", lambda: "ready")
    got = await step.wait_for_signal("trace-go", timeout="1h")
    after = await step.run("after", lambda: "done")
    return [before, got, after]


# -- spans and attributes ------------------------------------------------------------------------


async def test_a_pass_and_its_steps_have_spans_with_attributes(
    backend: Any, spans: InMemorySpanExporter
) -> None:
    ow = OpenWorkflow(backend)
    async with running_worker(backend, [two_steps]):
        handle = await ow.run(two_steps, 20)
        assert await handle.result(timeout="10s") == 41
        await passes_ended(spans, handle.id, 1)
    (create,) = named(spans, CREATE)
    (execute,) = passes_of(spans, handle.id)
    steps = named(spans, STEP)
    assert [attr(s, STEP_NAME) for s in steps] == ["double", "add-one"]

    assert create.kind == SpanKind.PRODUCER and create.parent is None  # no active span: a root
    assert attr(create, "openworkflow.workflow.name") == "trace-two-steps"
    assert attr(create, "openworkflow.run.id") == handle.id
    assert execute.kind == SpanKind.CONSUMER
    assert parent_id(execute) == span_id(create)
    assert {trace_id(s) for s in [create, execute, *steps]} == {trace_id(create)}
    assert attr(execute, "openworkflow.workflow.name") == "trace-two-steps"
    assert attr(execute, "openworkflow.namespace.id") == backend.namespace_id
    assert attr(execute, "openworkflow.execution.attempt") == 1
    assert attr(execute, OUTCOME) == "completed"
    assert execute.status.status_code == StatusCode.UNSET
    for step in steps:
        assert parent_id(step) == span_id(execute)
        assert attr(step, "openworkflow.run.id") == handle.id
        assert attr(step, "openworkflow.workflow.name") == "trace-two-steps"
        assert attr(step, "openworkflow.step.kind") == "function"
        assert attr(step, "openworkflow.step.attempt") == 1
        assert attr(step, OUTCOME) == "completed"

    # The original's key and format: a W3C carrier naming the create span.
    run = await ow.get_run(handle.id)
    assert run is not None
    assert run.context == {"traceContext": {"traceparent": traceparent_of(create)}}


async def test_a_span_made_in_a_step_body_is_a_child_of_the_step(
    backend: Any, spans: InMemorySpanExporter
) -> None:
    tracer = PROVIDER.get_tracer("test")

    def traced_body() -> str:  # runs in the worker's thread pool
        with tracer.start_as_current_span("inside"):
            return "ok"

    @workflow(name="trace-body-span")
    async def body_span(step: Step) -> str:
        return await step.run("work", traced_body)

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [body_span]):
        handle = await ow.run(body_span)
        assert await handle.result(timeout="10s") == "ok"
        await passes_ended(spans, handle.id, 1)
    (inside,) = named(spans, "inside")
    (step,) = named(spans, STEP)
    assert parent_id(inside) == span_id(step) and trace_id(inside) == trace_id(step)


# -- one trace per run ---------------------------------------------------------------------------


async def test_one_trace_across_passes_and_no_span_for_replayed_steps(
    backend: Any, spans: InMemorySpanExporter
) -> None:
    ow = OpenWorkflow(backend)
    async with running_worker(backend, [waits_for_signal]):
        handle = await ow.run(waits_for_signal)
        await wait_for_parked(backend, handle.id)
        await passes_ended(spans, handle.id, 1)
        await ow.send_signal("trace-go", {"n": 1})
        assert await handle.result(timeout="10s") == ["ready", {"data": {"n": 1}}, "done"]
        await passes_ended(spans, handle.id, 2)
    (create,) = named(spans, CREATE)
    first, second = passes_of(spans, handle.id)
    assert [attr(first, OUTCOME), attr(second, OUTCOME)] == ["suspended", "completed"]
    assert parent_id(first) == parent_id(second) == span_id(create)
    assert {trace_id(span) for span in spans.get_finished_spans()} == {trace_id(create)}

    by_pass = {
        span_id(p): [
            (attr(s, STEP_NAME), attr(s, OUTCOME))
            for s in named(spans, STEP)
            if parent_id(s) == span_id(p)
        ]
        for p in (first, second)
    }
    # "before" ran in the first pass only: the second pass replayed it without a span.
    assert by_pass[span_id(first)] == [("before", "completed"), ("trace-go", "suspended")]
    assert by_pass[span_id(second)] == [("trace-go", "completed"), ("after", "completed")]
    wait = next(s for s in named(spans, STEP) if attr(s, STEP_NAME) == "trace-go")
    assert attr(wait, "openworkflow.step.kind") == "signal-wait"


async def test_a_client_span_around_run_continues_into_the_run(
    backend: Any, spans: InMemorySpanExporter
) -> None:
    ow = OpenWorkflow(backend)
    with PROVIDER.get_tracer("test").start_as_current_span("http-request") as outer:
        handle = await ow.run(two_steps, 1)
    # A long lease: on a loaded machine the tests' short one can expire, and a second
    # pass (a takeover) is not what this test is about.
    async with running_worker(backend, [two_steps], lease_duration="30s"):
        assert await handle.result(timeout="10s") == 3
        await passes_ended(spans, handle.id, 1)
    (create,) = named(spans, CREATE)
    (execute,) = passes_of(spans, handle.id)
    outer_context = outer.get_span_context()
    assert parent_id(create) == outer_context.span_id
    assert parent_id(execute) == span_id(create)
    assert {trace_id(s) for s in spans.get_finished_spans()} == {outer_context.trace_id}


@workflow(name="trace-child")
async def trace_child(input: int, step: Step) -> int:
    return await step.run("child-work", lambda: input + 100)


@workflow(name="trace-parent")
async def trace_parent(step: Step) -> list[Any]:
    waited = await step.run_workflow(trace_child, 1, name="waited")
    started = await step.start_workflow(trace_child, 2, name="started")
    return [waited, started]


async def test_child_runs_join_the_trace_under_the_step_that_started_them(
    backend: Any, spans: InMemorySpanExporter
) -> None:
    ow = OpenWorkflow(backend)
    async with running_worker(backend, [trace_parent, trace_child], concurrency=3):
        handle = await ow.run(trace_parent)
        waited, started_id = await handle.result(timeout="20s")
        assert waited == 101
        assert await ow.handle(started_id).result(timeout="10s") == 102
        child_runs = await ow.list_runs(workflow_name="trace-child")
        for child in child_runs.data:
            await passes_ended(spans, child.id, 1)
        await passes_ended(spans, handle.id, 2)
    (create,) = named(spans, CREATE)  # children are created by steps, not by ow.run
    assert {trace_id(span) for span in spans.get_finished_spans()} == {trace_id(create)}

    steps = named(spans, STEP)
    waited_spans = [s for s in steps if attr(s, STEP_NAME) == "waited"]
    assert [attr(s, OUTCOME) for s in waited_spans] == ["suspended", "completed"]
    assert {attr(s, "openworkflow.step.kind") for s in waited_spans} == {"workflow"}
    (started_span,) = [s for s in steps if attr(s, STEP_NAME) == "started"]
    (waited_child,) = [c for c in child_runs.data if c.parent_step_attempt_id is not None]
    (started_child,) = [c for c in child_runs.data if c.parent_step_attempt_id is None]
    assert started_child.id == started_id
    for step_span, child in [(waited_spans[0], waited_child), (started_span, started_child)]:
        (child_pass,) = passes_of(spans, child.id)
        assert parent_id(child_pass) == span_id(step_span), attr(step_span, STEP_NAME)
        assert child.context == {"traceContext": {"traceparent": traceparent_of(step_span)}}
    assert attr(waited_spans[0], "openworkflow.child.run.id") == waited_child.id


@workflow(name="trace-continues")
async def trace_continues(input: int, step: Step) -> int:
    seen = await step.run("seen", lambda: input)
    if seen < 1:
        await step.continue_as_new(seen + 1)
    return seen


async def test_a_successor_run_continues_the_trace(
    backend: Any, spans: InMemorySpanExporter
) -> None:
    ow = OpenWorkflow(backend)
    async with running_worker(backend, [trace_continues]):
        handle = await ow.run(trace_continues, 0)
        assert await handle.result(timeout="10s") == 1
        first = await ow.get_run(handle.id)
        assert first is not None and first.continued_as_id is not None
        await passes_ended(spans, first.continued_as_id, 1)
    (first_pass,) = passes_of(spans, handle.id)
    (successor_pass,) = passes_of(spans, first.continued_as_id)
    assert attr(first_pass, OUTCOME) == "continued_as_new"
    assert parent_id(successor_pass) == span_id(first_pass)
    assert trace_id(successor_pass) == trace_id(first_pass)


# -- errors --------------------------------------------------------------------------------------


class FlakyError(RuntimeError):
    pass


@workflow(name="trace-fails", retry_policy=RetryPolicy(maximum_attempts=1))
async def trace_fails(step: Step) -> None:
    def explode() -> None:
        raise FlakyError("kaput")

    await step.run(
        "explode", explode, retry_policy=RetryPolicy(maximum_attempts=2, initial_interval="1ms")
    )


async def test_errors_are_recorded_on_the_step_and_pass_spans(
    backend: Any, spans: InMemorySpanExporter
) -> None:
    ow = OpenWorkflow(backend)
    async with running_worker(backend, [trace_fails]):
        handle = await ow.run(trace_fails)
        with pytest.raises(WorkflowFailedError):
            await handle.result(timeout="20s")
        await passes_ended(spans, handle.id, 2)
    first, second = passes_of(spans, handle.id)
    steps = named(spans, STEP)
    assert [(attr(s, "openworkflow.step.attempt"), attr(s, OUTCOME)) for s in steps] == [
        (1, "retrying"),
        (2, "failed"),
    ]
    for span in (*steps, first, second):
        assert span.status.status_code == StatusCode.ERROR
        assert span.status.description == "kaput"
        assert attr(span, "error.type") == "FlakyError"
    assert [attr(first, OUTCOME), attr(second, OUTCOME)] == ["retrying", "failed"]
    # The final failure is recorded as an exception event, with its type.
    final_step = steps[1]
    (event,) = [e for e in final_step.events if e.name == "exception"]
    assert event.attributes is not None
    assert str(event.attributes["exception.type"]).endswith(".FlakyError")
    assert any(e.name == "exception" for e in second.events)
    stored = await ow.get_run(handle.id)
    assert stored is not None and stored.status == "failed"


# -- stored contexts from elsewhere ----------------------------------------------------------------


async def test_a_pass_continues_a_stored_foreign_context_and_groups_runs_without_one(
    backend: Any, spans: InMemorySpanExporter
) -> None:
    foreign = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    with_context = await backend.create_workflow_run(
        CreateWorkflowRunParams(
            workflow_name="trace-two-steps", input=1, context={"traceContext": foreign}
        )
    )
    malformed = await backend.create_workflow_run(
        CreateWorkflowRunParams(
            workflow_name="trace-two-steps", input=2, context={"traceContext": {"traceparent": 7}}
        )
    )
    without = await backend.create_workflow_run(
        CreateWorkflowRunParams(workflow_name="trace-waits")
    )
    ow = OpenWorkflow(backend)
    async with running_worker(backend, [two_steps, waits_for_signal], concurrency=3):
        await ow.handle(with_context.id).result(timeout="10s")
        await ow.handle(malformed.id).result(timeout="10s")
        await wait_for_parked(backend, without.id)
        await ow.send_signal("trace-go", None)
        await ow.handle(without.id).result(timeout="10s")
        await passes_ended(spans, without.id, 2)
        await passes_ended(spans, with_context.id, 1)
        await passes_ended(spans, malformed.id, 1)
    (joined,) = passes_of(spans, with_context.id)
    assert trace_id(joined) == 0x0AF7651916CD43DD8448EB211C80319C
    assert parent_id(joined) == 0xB7AD6B7169203331
    for run in (malformed, without):  # no usable context: the run's id is the trace's
        run_passes = passes_of(spans, run.id)
        assert {trace_id(span) for span in run_passes} == {int(run.id.replace("-", ""), 16)}


# -- tracing off ---------------------------------------------------------------------------------


async def test_without_a_tracer_provider_nothing_is_traced_or_stored(backend: Any) -> None:
    EXPORTER.clear()
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    ow = OpenWorkflow(backend)
    # Even with an incoming (remote) span active, an untraced process stores nothing.
    remote = trace.SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=trace.TraceFlags(1))
    token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(remote)))
    try:
        handle = await ow.run(trace_parent)
    finally:
        otel_context.detach(token)
    async with running_worker(backend, [trace_parent, trace_child], concurrency=3):
        await handle.result(timeout="20s")
    runs = (await ow.list_runs(limit=10)).data
    assert len(runs) == 3 and all(run.context is None for run in runs)
    assert EXPORTER.get_finished_spans() == ()


NOT_INSTALLED = textwrap.dedent(
    """
    import asyncio, builtins, json, sys

    real_import = builtins.__import__

    def no_otel(name, *args, **kwargs):
        if name.split(".")[0] == "opentelemetry":
            raise ImportError("opentelemetry is not installed")
        return real_import(name, *args, **kwargs)

    builtins.__import__ = no_otel
    from openworkflow import OpenWorkflow, Step, Worker, workflow
    from openworkflow.sqlite import SqliteBackend

    @workflow(name="plain")
    async def plain(step: Step) -> int:
        return await step.run("one", lambda: 1)

    async def main():
        backend = SqliteBackend(":memory:")
        ow = OpenWorkflow(backend)
        async with Worker(backend, [plain]):
            handle = await ow.run(plain)
            output = await handle.result(timeout="10s")
        run = await ow.get_run(handle.id)
        await backend.stop()
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        print(json.dumps({"output": output, "context": run.context, "loaded": loaded}))

    asyncio.run(main())
    """
)


def test_without_opentelemetry_installed_runs_work_untraced() -> None:
    result = subprocess.run(
        [sys.executable, "-c", NOT_INSTALLED], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "output": 1,
        "context": None,
        "loaded": [],
    }
