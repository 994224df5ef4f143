"""Payload size limits: a warning above the warn size, a refusal before any write above the max.

The fault suite (``tests/faults/test_bad_input.py``, F9) measures the same
rules with huge payloads on every backend; these are the regular suite's
small, fast copies of them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from openworkflow import OpenWorkflow, Step, workflow
from openworkflow.core.json import PayloadLimits
from openworkflow.errors import PayloadError, WorkflowFailedError
from openworkflow.payload import (
    MAX_SIZE_VARIABLE,
    WARN_SIZE_VARIABLE,
    limits_from_environment,
    set_payload_limits,
)

KIB = 1024
MIB = 1024 * 1024


@workflow(name="limits-echo")
async def echo(input: Any) -> str:
    return "ok"


@workflow(name="limits-step")
async def big_step(step: Step, input: int) -> int:
    blob = await step.run("make", lambda: "x" * input)
    return len(blob)


@workflow(name="limits-output")
async def big_output(input: int) -> str:
    return "x" * input


@pytest.fixture(autouse=True)
def _default_limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts (and ends) with the default limits (256 KiB warn, 2 MiB max)."""
    monkeypatch.delenv(WARN_SIZE_VARIABLE, raising=False)
    monkeypatch.delenv(MAX_SIZE_VARIABLE, raising=False)
    set_payload_limits(None)
    yield
    set_payload_limits(None)


async def _run_count(ow: OpenWorkflow) -> int:
    return len((await ow.list_runs(limit=100)).data)


async def test_input_above_the_maximum_is_refused_before_any_write(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    with pytest.raises(PayloadError) as refused:
        await ow.run(echo, "x" * (2 * MIB + 1))
    message = str(refused.value)
    assert "input for workflow 'limits-echo'" in message
    assert "2 MiB (2097152 bytes)" in message and MAX_SIZE_VARIABLE in message
    assert await _run_count(ow) == 0


async def test_input_above_the_warn_size_is_accepted_with_a_warning(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="openworkflow.payload")
    ow = OpenWorkflow(backend)
    await ow.run(echo, "x" * KIB)
    assert not [r for r in caplog.records if "payload warning size" in r.getMessage()]
    await ow.run(echo, "x" * (300 * KIB))
    warnings = [r.getMessage() for r in caplog.records if "payload warning size" in r.getMessage()]
    assert len(warnings) == 1 and "input for workflow 'limits-echo'" in warnings[0], warnings
    assert await _run_count(ow) == 2


async def test_step_and_workflow_outputs_above_the_maximum_fail_the_run_unwritten(
    backend: Any,
) -> None:
    set_payload_limits(PayloadLimits(warn_size=None, max_size=4000))
    ow = OpenWorkflow(backend)
    step_run = await ow.run(big_step, 5000)
    output_run = await ow.run(big_output, 5000)
    fine = await ow.run(big_step, 100)
    async with ow.new_worker([big_step, big_output], concurrency=3):
        assert await fine.result(timeout="30s") == 100
        with pytest.raises(WorkflowFailedError, match="step 'make' of workflow 'limits-step'"):
            await step_run.result(timeout="30s")
        with pytest.raises(WorkflowFailedError, match="workflow 'limits-output'"):
            await output_run.result(timeout="30s")
    steps = (await ow.list_steps(step_run.id)).data
    assert [s for s in steps if s.status in ("completed", "succeeded")] == []
    stored = await ow.get_run(output_run.id)
    assert stored is not None and stored.status == "failed" and stored.output is None


async def test_limits_set_through_the_api_take_effect_and_can_be_turned_off(
    backend: Any,
) -> None:
    ow = OpenWorkflow(backend)
    set_payload_limits(PayloadLimits(warn_size=1000, max_size=4000))
    with pytest.raises(PayloadError, match=r"over the 3\.9 KiB \(4000 bytes\) payload limit"):
        await ow.run(echo, "y" * 5000)
    set_payload_limits(PayloadLimits(warn_size=None, max_size=None))
    await ow.run(echo, "z" * (2 * MIB + 1))  # no limit: accepted
    assert await _run_count(ow) == 1


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert limits_from_environment() == PayloadLimits(warn_size=256 * KIB, max_size=2 * MIB)
    monkeypatch.setenv(WARN_SIZE_VARIABLE, "1KiB")
    monkeypatch.setenv(MAX_SIZE_VARIABLE, "8KiB")
    assert limits_from_environment() == PayloadLimits(warn_size=KIB, max_size=8 * KIB)
