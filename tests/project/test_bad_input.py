"""Bad input gets one clear error naming the problem, and nothing is half-written."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from pydantic import BaseModel

import openworkflow
from openworkflow import OpenWorkflow, SqliteBackend, Step, workflow
from openworkflow.errors import (
    BackendClosedError,
    InputValidationError,
    InvalidDurationError,
    PayloadError,
    WorkflowDefinitionError,
)


class Signup(BaseModel):
    user_id: str
    age: int


@workflow
async def signup(input: Signup, step: Step) -> str:
    return input.user_id


@workflow(schema=None)
async def untyped(input: Any) -> Any:
    return input


async def _run_count(ow: OpenWorkflow) -> int:
    return len((await ow.list_runs()).data)


async def test_invalid_input_is_rejected_in_the_caller(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    with pytest.raises(InputValidationError, match=r"'signup'.*age: Input should be a valid"):
        await ow.run(signup, {"user_id": "u1", "age": "old"})
    assert await _run_count(ow) == 0


async def test_non_json_input_without_schema_is_refused(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    with pytest.raises(PayloadError, match=r"'untyped'.*type set"):
        await ow.run(untyped, {"ids": {1, 2}})
    assert await _run_count(ow) == 0


@pytest.mark.parametrize("field", ["available_at", "deadline_at"])
async def test_invalid_times_are_refused_before_writing(backend: Any, field: str) -> None:
    ow = OpenWorkflow(backend)
    with pytest.raises(InvalidDurationError, match="5 lightyears"):
        await ow.run(untyped, None, **{field: "5 lightyears"})
    with pytest.raises(InvalidDurationError, match="timezone-aware"):
        await ow.run(untyped, None, **{field: datetime(2030, 1, 1)})
    assert await _run_count(ow) == 0


async def test_a_stopped_backend_says_so() -> None:
    backend = SqliteBackend(":memory:")
    await backend.stop()
    with pytest.raises(BackendClosedError, match="stopped"):
        await OpenWorkflow(backend).run(untyped, None)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://localhost/db", "unsupported database URL scheme 'mysql'"),
        ("sqlite://relative.db", "three slashes"),
    ],
)
def test_bad_database_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        openworkflow.connect(url)


def test_unwritable_sqlite_path_is_one_clear_error(tmp_path: Any) -> None:
    target = tmp_path / "missing-dir" / "sub" / "x.db"
    with pytest.raises(openworkflow.OpenWorkflowError, match="valid and writable"):
        SqliteBackend(str(target))


def test_decorator_misuse_names_the_function() -> None:
    def not_async(step: Step) -> None:
        return None

    async def unknown_parameter(step: Step, context: object) -> None:
        return None

    with pytest.raises(WorkflowDefinitionError, match="not_async must be defined with 'async def'"):
        workflow(not_async)  # type: ignore[arg-type]
    with pytest.raises(WorkflowDefinitionError, match="unknown_parameter has parameter 'context'"):
        workflow(unknown_parameter)


def test_workflow_name_and_schema_defaults() -> None:
    assert signup.name == "signup"
    assert signup.spec.schema is Signup

    @workflow(name="custom", version="v2")
    async def send_welcome_email(input: dict[str, int]) -> None:
        return None

    assert (send_welcome_email.name, send_welcome_email.version) == ("custom", "v2")

    @workflow
    async def send_follow_up() -> None:
        return None

    assert send_follow_up.name == "send-follow-up"


async def test_declared_spec_starts_runs_and_implements_later(backend: Any) -> None:
    spec = openworkflow.declare_workflow("declared", schema=Signup)
    ow = OpenWorkflow(backend)
    with pytest.raises(InputValidationError):
        await ow.run(spec, {"user_id": 1})
    handle = await ow.run(spec, {"user_id": "u9", "age": 3})
    assert handle.workflow_run is not None
    assert handle.workflow_run.input == {"user_id": "u9", "age": 3}

    @spec.implement
    async def declared(input: Signup) -> str:
        return input.user_id

    async with ow.new_worker([declared], concurrency=1):
        assert await handle.result(timeout="10s") == "u9"
