"""Tracing: every run one trace, with a span per pass and per step that does work."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from openworkflow import Step, workflow
from openworkflow.tracing import use_tracer_provider


@workflow(name="traced-greeting")
async def traced_greeting(input: str, step: Step) -> str:
    await step.sleep("pause", "1h")  # a second pass: the same trace goes on
    return str(await step.run("greet", lambda: f"Hello, {input}!"))


# --8<-- [start:setup]
def trace_openworkflow(exporter: SpanExporter) -> TracerProvider:
    """Send OpenWorkflow's spans to ``exporter`` (an OTLP exporter in production)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # Usually the application's global provider does it:
    # opentelemetry.trace.set_tracer_provider(provider)
    use_tracer_provider(provider)
    return provider


# --8<-- [end:setup]


async def example() -> None:
    """One run, two passes, one trace."""
    from openworkflow.testing import WorkflowEnvironment

    exporter = InMemorySpanExporter()
    trace_openworkflow(exporter)
    try:
        async with WorkflowEnvironment(workflows=[traced_greeting]) as env:
            assert await env.run(traced_greeting, "Ada") == "Hello, Ada!"
    finally:
        use_tracer_provider(None)
    spans = exporter.get_finished_spans()
    names = [span.name for span in spans]
    assert names.count("workflow_run.execute") == 2, names
    assert "step_attempt.execute" in names and "workflow_run.create" in names
    assert len({span.context.trace_id for span in spans}) == 1
