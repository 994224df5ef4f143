"""A history of a run a TypeScript worker executed replays against the Python workflow.

The setup is the interop one (``test_typescript_interop.py``, whose fixtures
and helpers this reuses): the pinned npm ``openworkflow`` package on a fresh
PostgreSQL schema. The Python client starts runs of ``interop-greet`` and
``interop-fail``, a TypeScript worker executes them, and the histories that
``export_run_history`` reads replay against the equivalent Python workflows;
a Python workflow whose code differs is reported at the right step.

Without Node.js or npm the tests skip locally and fail under ``CI``, like the
other interop tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from openworkflow import OpenWorkflow, RetryPolicy, Step, workflow
from openworkflow.errors import ReplayDivergenceError
from openworkflow.postgres import PostgresBackend
from openworkflow.testing.history import export_run_history
from openworkflow.testing.replay import replay
from tests.fixtures.postgres import require_server_url
from tests.interop.test_typescript_interop import (
    FAIL,
    GREET,
    TypeScript,
    _drop_schemas,
    _fresh_name,
    _python_client_typescript_worker,
    interop_fail,
    interop_greet,
    typescript,  # noqa: F401  (the session fixture, reused)
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


BODIES: list[str] = []
"""Step bodies of the counting workflows below that ran: a replay must run none."""


def _body(name: str, value: Any) -> Any:
    BODIES.append(name)
    return value


@workflow(name=GREET, schema=None)
async def counting_greet(input: Any, step: Step) -> dict[str, Any]:
    """``interop_greet`` with bodies that count their runs."""
    greeting = await step.run("greet", lambda: _body("greet", f"Hello, {input['name']}!"))
    keys = await step.run("mixed-keys", lambda: _body("mixed-keys", {}))
    shout = await step.run("greet", lambda: _body("greet:1", greeting.upper()))
    await step.sleep("nap", "1s")
    nothing = await step.run("nothing", lambda: _body("nothing", None))
    return {"greeting": greeting, "shout": shout, "keys": keys, "nothing": nothing}


@workflow(name=FAIL, schema=None)
async def counting_fail(input: Any, step: Step) -> str:
    """``interop_fail`` with bodies that count their runs."""

    def explode() -> None:
        _body("explode", None)
        raise TypeError(f"boom for {input['name']}")

    await step.run("prepare", lambda: _body("prepare", {"ready": True}))
    await step.run("explode", explode, retry_policy=RetryPolicy(maximum_attempts=1))
    return "unreachable"


@workflow(name=GREET, schema=None)
async def greet_with_a_function_nap(input: Any, step: Step) -> dict[str, Any]:
    """``interop-greet`` with its sleep turned into a function step of the same name."""
    greeting = await step.run("greet", lambda: f"Hello, {input['name']}!")
    await step.run("mixed-keys", lambda: {})
    await step.run("greet", lambda: greeting.upper())
    await step.run("nap", lambda: None)
    return {}


async def _export_typescript_runs(node: TypeScript, url: str, schema: str) -> dict[str, Any]:
    """Start each workflow's run from Python, let a TypeScript worker execute it; exports."""
    namespace = f"replay-{schema[-12:]}"
    env = node.env(url, schema, namespace)
    await node.call(env, "migrate")  # the TypeScript package creates the schema
    backend = PostgresBackend(url, namespace_id=namespace, schema=schema)
    try:
        ow = OpenWorkflow(backend)
        histories: dict[str, Any] = {}
        for name in (GREET, FAIL):
            direction = await _python_client_typescript_worker(node, env, ow, name)
            histories[name] = await export_run_history(backend, direction.run_id)
        return histories
    finally:
        await backend.stop()


@pytest.fixture(scope="module")
def histories(typescript: TypeScript) -> Iterator[dict[str, Any]]:  # noqa: F811
    """The exported history of each workflow's run, executed by a TypeScript worker."""
    url = require_server_url()
    schema = _fresh_name()
    try:
        yield asyncio.run(_export_typescript_runs(typescript, url, schema))
    finally:
        _drop_schemas(url, schema)


def test_a_typescript_run_replays_against_the_python_workflow(
    histories: dict[str, Any],
) -> None:
    greet = histories[GREET]
    assert greet["run"]["status"] == "completed"
    assert greet["run"]["worker_id"] != "openworkflow-replay"
    assert [a["step_name"] for a in greet["step_attempts"]] == [
        "greet",
        "mixed-keys",
        "greet:1",
        "nap",
        "nothing",
    ]
    replay(interop_greet, greet)
    replay(counting_greet, greet)
    assert BODIES == []


def test_a_failed_typescript_run_replays_against_the_python_workflow(
    histories: dict[str, Any],
) -> None:
    failed = histories[FAIL]
    assert failed["run"]["status"] == "failed"
    assert [(a["step_name"], a["status"]) for a in failed["step_attempts"]] == [
        ("prepare", "completed"),
        ("explode", "failed"),
    ]
    replay(interop_fail, failed)
    replay(counting_fail, failed)
    assert BODIES == []  # the failed step is not run again (TypeScript keeps no memo of it)


def test_python_code_that_differs_from_a_typescript_run_is_reported(
    histories: dict[str, Any],
) -> None:
    with pytest.raises(ReplayDivergenceError) as raised:
        replay(greet_with_a_function_nap, histories[GREET])
    assert (raised.value.kind, raised.value.step_name) == ("kind_changed", "nap")
    assert "'sleep'" in str(raised.value)
