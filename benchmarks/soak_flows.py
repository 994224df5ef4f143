"""The soak's workflows, copied into the folder the soak generates for ``ow worker start``.

This file imports only the standard library and :mod:`openworkflow`, because
the workers load it by path (discovery) from the generated folder, not as
``benchmarks.soak_flows``. The orchestrator imports it as a module to name the
workflows when it starts runs, and uses the ``expected_*`` functions to know
what each run must return.

Every step body is short (well under a second), so a worker killed at random
rarely interrupts the same step of one run several times (the engine fails a
run whose step crashed its worker ``step_crash_limit`` times).
"""

from __future__ import annotations

import asyncio
from typing import Any

from openworkflow import RetryPolicy, RunInfo, Step, StepFailedError, step_context, workflow

FAST_RETRY = RetryPolicy(initial_interval="100ms", backoff_coefficient=1.0)
"""Retries of the flaky step: soon, and up to the default number of attempts."""

DOOMED_RETRY = RetryPolicy(initial_interval="100ms", maximum_attempts=2)
"""The doomed step: two attempts, both fail."""

FLAKY_FAILURES = 2
"""How many attempts of the flaky step fail before one succeeds."""

SIGNAL_NAME = "go"


class DoomedError(ValueError):
    """What the doomed step raises on every attempt."""


async def _double(n: int) -> int:
    await asyncio.sleep(0.01)
    return 2 * n


def _plus_one(value: int) -> int:
    return value + 1


@workflow(name="soak-plain", schema=None)
async def plain(input: dict[str, Any], step: Step, run: RunInfo) -> dict[str, Any]:
    """Two quick steps (one async, one sync)."""
    doubled = await step.run("double", _double, input["n"])
    value = await step.run("plus-one", _plus_one, doubled)
    return {"n": input["n"], "value": value}


def expected_plain(n: int) -> dict[str, Any]:
    """What ``soak-plain`` (and ``soak-cancel-race``) return for ``n``."""
    return {"n": n, "value": 2 * n + 1}


@workflow(name="soak-sleep", schema=None)
async def sleeper(input: dict[str, Any], step: Step, run: RunInfo) -> dict[str, Any]:
    """A step, a durable sleep of ``sleep_ms``, another step."""
    doubled = await step.run("double", _double, input["n"])
    await step.sleep("nap", f"{input['sleep_ms']}ms")
    value = await step.run("plus-one", _plus_one, doubled)
    return {"n": input["n"], "value": value}


@workflow(name="soak-signal", schema=None)
async def signalled(input: dict[str, Any], step: Step, run: RunInfo) -> dict[str, Any]:
    """Waits for the soak's one signal, then waits again briefly (nothing may come twice)."""
    await step.run("ready", _double, input["n"])
    got = await step.wait_for_signal(SIGNAL_NAME, timeout="10m")
    again = await step.wait_for_signal(SIGNAL_NAME, name="again", timeout="1s")
    return {"n": input["n"], "got": got, "again": again}


def signal_data(token: str) -> dict[str, Any]:
    """The data the soak sends to a ``soak-signal`` run."""
    return {"token": token}


def expected_signal(n: int, token: str) -> dict[str, Any]:
    """What ``soak-signal`` returns once it got its signal exactly once (the wait wraps it)."""
    return {"n": n, "got": {"data": signal_data(token)}, "again": None}


async def _triple(n: int) -> int:
    await asyncio.sleep(0.01)
    return 3 * n


@workflow(name="soak-child", schema=None)
async def child(input: dict[str, Any], step: Step, run: RunInfo) -> dict[str, Any]:
    """A child run: one step."""
    return {"value": await step.run("triple", _triple, input["n"])}


@workflow(name="soak-parent", schema=None)
async def parent(input: dict[str, Any], step: Step, run: RunInfo) -> dict[str, Any]:
    """Two children at once, then one more after them."""
    n = input["n"]
    first = await asyncio.gather(
        step.run_workflow(child, {"n": 10 * n}, name="child-0"),
        step.run_workflow(child, {"n": 10 * n + 1}, name="child-1"),
    )
    last = await step.run_workflow(child, {"n": 10 * n + 2}, name="child-2")
    return {"n": n, "values": [item["value"] for item in (*first, last)]}


CHILDREN_PER_PARENT = 3


def expected_parent(n: int) -> dict[str, Any]:
    """What ``soak-parent`` returns for ``n``."""
    return {"n": n, "values": [3 * (10 * n + index) for index in range(CHILDREN_PER_PARENT)]}


def _flaky(n: int) -> int:
    if step_context().attempt <= FLAKY_FAILURES:
        raise ConnectionError(f"flaky step of {n}: attempt {step_context().attempt}")
    return n + 7


@workflow(name="soak-retry", schema=None)
async def retried(input: dict[str, Any], step: Step, run: RunInfo) -> dict[str, Any]:
    """A step that fails twice, then succeeds."""
    value = await step.run("flaky", _flaky, input["n"], retry_policy=FAST_RETRY)
    return {"n": input["n"], "value": value}


def expected_retry(n: int) -> dict[str, Any]:
    """What ``soak-retry`` returns for ``n``."""
    return {"n": n, "value": n + 7}


def _doomed(n: int) -> int:
    raise DoomedError(f"doomed step of {n}")


@workflow(name="soak-fail-caught", schema=None)
async def fail_caught(input: dict[str, Any], step: Step, run: RunInfo) -> dict[str, Any]:
    """A step that fails for good; the workflow catches it and runs a fallback."""
    try:
        await step.run("doomed", _doomed, input["n"], retry_policy=DOOMED_RETRY)
    except (DoomedError, StepFailedError) as error:
        fallback = await step.run("fallback", _plus_one, input["n"])
        return {"n": input["n"], "caught": type(error).__name__, "fallback": fallback}
    return {"n": input["n"], "caught": None}


def expected_fail_caught(n: int) -> dict[str, Any]:
    """What ``soak-fail-caught`` returns for ``n``."""
    return {"n": n, "caught": "DoomedError", "fallback": n + 1}


@workflow(name="soak-fail", schema=None)
async def fail_uncaught(input: dict[str, Any], step: Step, run: RunInfo) -> dict[str, Any]:
    """A step that fails for good, not caught: the run fails."""
    await step.run("doomed", _doomed, input["n"], retry_policy=DOOMED_RETRY)
    return {"n": input["n"]}


@workflow(name="soak-cancel", schema=None)
async def cancelled(input: dict[str, Any], step: Step, run: RunInfo) -> dict[str, Any]:
    """A step, then a durable sleep of an hour: the soak cancels it long before."""
    await step.run("double", _double, input["n"])
    await step.sleep("long", "1h")
    return {"n": input["n"]}


@workflow(name="soak-cancel-race", schema=None)
async def cancel_race(input: dict[str, Any], step: Step, run: RunInfo) -> dict[str, Any]:
    """Like ``soak-plain`` with a short sleep: the soak's cancel races its completion."""
    doubled = await step.run("double", _double, input["n"])
    await step.sleep("nap", f"{input['sleep_ms']}ms")
    value = await step.run("plus-one", _plus_one, doubled)
    return {"n": input["n"], "value": value}


WORKFLOWS = [plain, sleeper, signalled, child, parent, retried, fail_caught]
WORKFLOWS += [fail_uncaught, cancelled, cancel_race]
