"""One trace across the TypeScript original and Python: the stored ``traceContext``.

The original (npm ``openworkflow`` 0.10+) stores the W3C carrier of its
``workflow_run.create`` span in the run's ``context`` as
``{"traceContext": {"traceparent": ...}}``. ``ts/tracing.mjs`` drives it with
the OpenTelemetry Node SDK (installed next to it, in a cache folder of its
own):

- a run the TypeScript client creates inside a span is executed by a Python
  worker: every Python pass (two: the workflow sleeps) continues that trace,
  as a child of the TypeScript create span, with the steps under the passes;
- a run the Python client creates inside a span is executed by a TypeScript
  worker: the original starts a trace per execution *linked* to the stored
  creation span (its design; see docs/differences.md), and the link names the
  Python create span, so the carrier Python writes is one the original reads.

Skipped locally without Node.js, npm or the packages (failed under ``CI``), as
``test_typescript_interop.py``. PostgreSQL comes from
``OPENWORKFLOW_TEST_POSTGRES_URL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from openworkflow import OpenWorkflow, Step, Worker, workflow
from openworkflow.postgres import PostgresBackend
from openworkflow.tracing import use_tracer_provider
from tests.fixtures.postgres import require_server_url
from tests.interop.test_typescript_interop import (
    MIN_NODE_MAJOR,
    NODE_TIMEOUT_S,
    NPM_INSTALL_TIMEOUT_S,
    OPENWORKFLOW_NPM_VERSION,
    POSTGRES_NPM_VERSION,
    _drop_schemas,
    _fresh_name,
    _installed_version,
    _kill,
    _node_major,
    _tool,
    _unavailable,
    finish,
)
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

OTEL_API_NPM_VERSION = "1.9.1"
OTEL_SDK_NPM_VERSION = "2.12.1"  # @opentelemetry/sdk-trace-node (needs api < 1.10)
PACKAGES = {
    "openworkflow": OPENWORKFLOW_NPM_VERSION,
    "postgres": POSTGRES_NPM_VERSION,
    "@opentelemetry/api": OTEL_API_NPM_VERSION,
    "@opentelemetry/sdk-trace-node": OTEL_SDK_NPM_VERSION,
}
DRIVER = Path(__file__).resolve().parent / "ts" / "tracing.mjs"
CACHE_VARIABLE = "OPENWORKFLOW_INTEROP_NPM_DIR"
INPUT = {"name": "Zoë"}

EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))


@workflow(name="interop-trace", schema=None)
async def interop_trace(input: Any, step: Step) -> str:
    """The same workflow as ``interopTrace`` in ``ts/tracing.mjs``."""
    greeting = await step.run("greet", lambda: f"Hello, {input['name']}!")
    await step.sleep("nap", "1s")
    return await step.run("shout", lambda: greeting.upper())


# -- the TypeScript side ----------------------------------------------------------------


def _is_installed(directory: Path) -> bool:
    return all(
        _installed_version(directory, package) == version for package, version in PACKAGES.items()
    )


def _npm_install(npm: str, target: Path) -> None:
    """Install the pinned packages into ``target`` (atomically, by renaming)."""
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    partial.mkdir(parents=True)
    try:
        manifest = {"name": "openworkflow-tracing-interop", "private": True, "version": "0.0.0"}
        (partial / "package.json").write_text(json.dumps(manifest))
        specs = [f"{package}@{version}" for package, version in PACKAGES.items()]
        command = [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", *specs]
        try:
            result = subprocess.run(
                command,
                cwd=partial,
                capture_output=True,
                text=True,
                timeout=NPM_INSTALL_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            _unavailable(f"npm install failed: {error}")
        if result.returncode != 0 or not _is_installed(partial):
            _unavailable(f"npm install of {specs} failed:\n{result.stderr[-2000:]}")
        with contextlib.suppress(OSError):  # another session may have won the race
            partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


@pytest.fixture(scope="module")
def driver(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the pinned packages installed (cached) and ``tracing.mjs`` next to them."""
    node, npm = _tool("node"), _tool("npm")
    if _node_major(node) < MIN_NODE_MAJOR:
        _unavailable(f"openworkflow needs Node.js >= {MIN_NODE_MAJOR}")
    name = f"openworkflow-{OPENWORKFLOW_NPM_VERSION}-otel-{OTEL_SDK_NPM_VERSION}"
    configured, cache = os.environ.get(CACHE_VARIABLE), getattr(request.config, "cache", None)
    if configured:
        directory = Path(configured) / name
    elif cache is not None:
        directory = Path(cache.mkdir("openworkflow-interop")) / name
    else:
        directory = tmp_path_factory.mktemp("openworkflow-interop") / name
    if not _is_installed(directory):
        shutil.rmtree(directory, ignore_errors=True)
        directory.parent.mkdir(parents=True, exist_ok=True)
        _npm_install(npm, directory)
    staged = directory / f".tracing-{uuid.uuid4().hex}.mjs"
    shutil.copyfile(DRIVER, staged)
    staged.replace(directory / "tracing.mjs")
    return directory


async def _node(directory: Path, env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run ``node tracing.mjs <args>`` to the end; its one event."""
    process = await asyncio.create_subprocess_exec(
        _tool("node"),
        "tracing.mjs",
        *args,
        cwd=directory,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        (event,) = await finish(process, " ".join(args))
    finally:
        await _kill(process)
    return event


# -- the Python side ----------------------------------------------------------------------


@pytest.fixture
def schema() -> Iterator[tuple[str, str, str]]:
    """(url, schema, namespace): a fresh schema, dropped afterwards."""
    url, name = require_server_url(), _fresh_name()
    try:
        yield url, name, f"trace-{name[-12:]}"
    finally:
        _drop_schemas(url, name)


@pytest.fixture
async def traced(
    schema: tuple[str, str, str],
) -> AsyncIterator[tuple[OpenWorkflow, dict[str, str]]]:
    """A Python client traced into the in-memory exporter, and the driver's environment."""
    url, name, namespace = schema
    env = {
        **os.environ,
        "OW_URL": url,
        "OW_SCHEMA": name,
        "OW_NAMESPACE": namespace,
        "OW_TIMEOUT_MS": str(int(NODE_TIMEOUT_S * 1000) - 10_000),
    }
    EXPORTER.clear()
    use_tracer_provider(PROVIDER)
    backend = PostgresBackend(url, namespace_id=namespace, schema=name)
    try:
        yield OpenWorkflow(backend), env
    finally:
        use_tracer_provider(None)
        await backend.stop()


def _hex(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


def _parent_hex(span: ReadableSpan) -> str | None:
    return None if span.parent is None else f"{span.parent.span_id:016x}"


async def test_a_python_worker_continues_the_trace_of_a_typescript_client(
    driver: Path, traced: tuple[OpenWorkflow, dict[str, str]]
) -> None:
    ow, env = traced
    created = await _node(driver, env, "create", json.dumps(INPUT))
    ts_spans = {span["name"]: span for span in created["spans"]}
    request, ts_create = ts_spans["ts-request"], ts_spans["workflow_run.create"]
    assert ts_create["parentSpanId"] == request["spanId"]
    trace_id = request["traceId"]
    run_id = created["run"]["id"]
    stored = {"traceparent": f"00-{trace_id}-{ts_create['spanId']}-01"}
    assert created["run"]["context"] == {"traceContext": stored}

    async with Worker(ow.backend, [interop_trace]):
        assert await ow.handle(run_id).result(timeout="60s") == "HELLO, ZOË!"
        await wait_until(
            lambda: (
                len([s for s in EXPORTER.get_finished_spans() if s.name.endswith("execute")]) >= 4
            ),
            message="two passes and their steps",
        )
    spans = EXPORTER.get_finished_spans()
    passes = [span for span in spans if span.name == "workflow_run.execute"]
    steps = [span for span in spans if span.name == "step_attempt.execute"]
    assert len(passes) == 2
    assert {_hex(span)[0] for span in spans} == {trace_id}  # one trace, both languages
    assert {_parent_hex(span) for span in passes} == {ts_create["spanId"]}
    pass_ids = {_hex(span)[1] for span in passes}
    assert {_parent_hex(span) for span in steps} <= pass_ids
    assert [span.attributes and span.attributes["openworkflow.step.name"] for span in steps] == [
        "greet",
        "nap",
        "shout",
    ]
    run = await ow.get_run(run_id)
    assert run is not None and run.context == {"traceContext": stored}  # read back unchanged


async def test_a_typescript_worker_links_to_the_creation_span_of_a_python_client(
    driver: Path, traced: tuple[OpenWorkflow, dict[str, str]]
) -> None:
    ow, env = traced
    with PROVIDER.get_tracer("test").start_as_current_span("py-request"):
        handle = await ow.run(interop_trace, INPUT)
    (py_create,) = [s for s in EXPORTER.get_finished_spans() if s.name == "workflow_run.create"]
    py_trace, py_span = _hex(py_create)

    finished = await _node(driver, env, "work", handle.id)
    assert finished["run"]["status"] == "completed", finished["run"]
    assert finished["run"]["output"] == "HELLO, ZOË!"
    executions = [s for s in finished["spans"] if s["name"] == "workflow_run.execute"]
    assert executions, finished["spans"]
    for execution in executions:
        assert execution["attributes"]["openworkflow.run.id"] == handle.id
        assert execution["links"] == [{"traceId": py_trace, "spanId": py_span}]
