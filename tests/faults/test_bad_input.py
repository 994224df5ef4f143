"""F8, F9 and F12: values JSON cannot hold, huge payloads, and runs no worker here knows.

F8: every kind of value the stored JSON cannot represent faithfully is fed in
three places (workflow input, step output, workflow output) on every
backend. Each must be refused with an error naming the workflow (and step)
and the offending type or value, and nothing may be half-written: no run for
a refused input, no completed step attempt and no stored output for a refused
output. A second test checks that a step's result has the same types on the
first run, on replay and as stored (a tuple is a list everywhere, an enum
its value, ``-0.0`` is ``0.0``, a float of 1e16 stays a float on PostgreSQL).

F9: payloads of 1 KiB, 300 KiB, 2 MiB + 1 and 16 MiB in the same three
places: a warning above 256 KiB, a refusal above 2 MiB naming the limit,
the size and how to change it, before anything is written; then the limits
are changed through the API, the environment and the config file.

F12: runs of a workflow name and version no worker has: the worker keeps
running (and runs other work), logs a warning, creates no step attempt and
does not fail the run; a worker that has the workflow picks it up.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import logging
from collections import OrderedDict
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from openworkflow import OpenWorkflow, RunInfo, Step, declare_workflow, workflow
from openworkflow.config import ConfigError, define_config, load_config
from openworkflow.core.json import PayloadLimits
from openworkflow.errors import PayloadError, WorkflowFailedError
from openworkflow.payload import (
    MAX_SIZE_VARIABLE,
    WARN_SIZE_VARIABLE,
    current_limits,
    set_payload_limits,
)
from openworkflow.settings import resolve_settings
from tests.faults.figures import Figure, report
from tests.faults.ledger import Expected, tally
from tests.fixtures.clock import Clock
from tests.support.waiting import wait_until

KIB = 1024
MIB = 1024 * 1024


class Blob(BaseModel):
    data: bytes


class Measured(BaseModel):
    value: float
    label: str
    count: int = 0


def _self_referencing() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


def _deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = [value]
    return value


# (label, factory of the bad value, fragment the error must contain)
BAD_VALUES: list[tuple[str, Any, str]] = [
    ("set", lambda: {1, 2}, "type set"),
    ("frozenset", lambda: frozenset({"a"}), "type frozenset"),
    ("bytes", lambda: b"\x00\xff", "type bytes"),
    ("NaN", lambda: {"x": float("nan")}, "nan at $.x is not a finite number"),
    ("Infinity", lambda: [float("inf")], "inf at $[0] is not a finite number"),
    ("-Infinity", lambda: float("-inf"), "-inf at $ is not a finite number"),
    ("NUL in a string", lambda: {"text": "a\x00b"}, "contains a NUL character"),
    ("NUL in a key", lambda: {"k\x00": 1}, "contains a NUL character"),
    ("lone surrogate", lambda: ["ok", "a\ud800b"], "contains a lone surrogate"),
    ("int key", lambda: {1: "one"}, "is a int; JSON keys must be str"),
    ("int above 2**53", lambda: 2**53, "beyond ±(2**53 - 1)"),
    ("int below -2**63", lambda: {"n": -(2**63)}, "beyond ±(2**53 - 1)"),
    ("object", lambda: object(), "type object"),
    ("naive datetime", lambda: datetime(2026, 1, 1), "type datetime"),
    ("Decimal", lambda: Decimal("1.10"), "type Decimal"),
    ("generator", lambda: (item for item in [1]), "type generator"),
    ("self-reference", _self_referencing, "(or contains itself)"),
    ("300 levels deep", lambda: _deep(300), "nests more than 256 levels deep"),
    ("model with non-UTF-8 bytes", lambda: Blob(data=b"\xff"), "Blob model at $ cannot be"),
]


@workflow(name="faults-untyped", schema=None)
async def untyped(input: Any) -> Any:
    return input


@workflow(name="faults-measured")
async def measured(input: Measured) -> float:
    return input.value


@workflow(name="faults-bad-step")
async def bad_step(input: int, step: Step) -> str:
    await step.run("produce", lambda: BAD_VALUES[input][1]())
    return "unreachable"


@workflow(name="faults-bad-output")
async def bad_output(input: int) -> Any:
    return BAD_VALUES[input][1]()


@pytest.fixture(autouse=True)
def _default_limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts (and ends) with the default payload limits."""
    monkeypatch.delenv(WARN_SIZE_VARIABLE, raising=False)
    monkeypatch.delenv(MAX_SIZE_VARIABLE, raising=False)
    set_payload_limits(None)
    yield
    set_payload_limits(None)


async def _runs(ow: OpenWorkflow) -> int:
    return len((await ow.list_runs(limit=100)).data)


async def _completed_attempts(ow: OpenWorkflow, run_id: str) -> list[Any]:
    steps = (await ow.list_steps(run_id)).data
    return [step for step in steps if step.status in ("completed", "succeeded")]


# -- F8 ----------------------------------------------------------------------------------------


async def test_values_json_cannot_hold_are_refused_before_any_write(
    backend: Any, backend_kind: str
) -> None:
    """F8: Input, step output and workflow output: refused with names and type, nothing written."""
    ow = OpenWorkflow(backend)
    refused = wrong_acceptances = half_written = 0
    problems: list[str] = []

    # Workflow input, without a schema and through a pydantic schema.
    inputs: list[tuple[str, Any, Any, str]] = [
        (label, untyped, make(), fragment) for label, make, fragment in BAD_VALUES
    ]
    inputs += [
        ("NaN through a schema", measured, {"value": float("nan"), "label": "x"}, "finite"),
        ("NUL through a schema", measured, {"value": 1.0, "label": "a\x00"}, "NUL character"),
        (
            "big int through a schema",
            measured,
            {"value": 1, "label": "x", "count": 2**60},
            "beyond",
        ),
    ]
    for label, target, value, fragment in inputs:
        before = await _runs(ow)
        try:
            await ow.run(target, value)
        except PayloadError as error:
            refused += 1
            message = str(error)
            if f"input for workflow {target.name!r}" not in message or fragment not in message:
                problems.append(f"input {label}: {message}")
        else:
            wrong_acceptances += 1
            problems.append(f"input {label}: accepted")
        half_written += await _runs(ow) - before

    # Step outputs and workflow outputs, executed by a worker.
    handles = []
    for index in range(len(BAD_VALUES)):
        handles.append(("step", index, await ow.run(bad_step, index)))
        handles.append(("output", index, await ow.run(bad_output, index)))
    async with ow.new_worker([bad_step, bad_output], concurrency=8):
        for where, index, handle in handles:
            label, _, fragment = BAD_VALUES[index]
            try:
                await handle.result(timeout="60s")
            except WorkflowFailedError as error:
                refused += 1
                message = str(error)
                expected = (
                    "step 'produce' of workflow 'faults-bad-step' returned a value that cannot "
                    "be stored as JSON"
                    if where == "step"
                    else "workflow 'faults-bad-output' returned a value that cannot be stored"
                )
                if expected not in message or fragment not in message:
                    problems.append(f"{where} {label}: {message}")
            else:
                wrong_acceptances += 1
                problems.append(f"{where} {label}: completed")
            run = await ow.get_run(handle.id)
            assert run is not None
            garbage = run.output is not None or bool(await _completed_attempts(ow, handle.id))
            half_written += garbage
            if garbage:
                problems.append(f"{where} {label}: something was stored")

    assert not problems, "\n".join(problems)
    total = len(inputs) + len(handles)
    assert refused == total
    report(
        Figure(
            "F8",
            f"non-JSON values refused at write ({backend_kind})",
            runs=total,
            faults=total,
            lost=half_written,
            duplicated=wrong_acceptances,
            details=(
                f"{len(BAD_VALUES)} kinds of bad value (sets, bytes, NaN/±Infinity, NUL in "
                "strings and keys, lone surrogates, int keys, ints beyond 2**53, objects, naive "
                "datetimes, Decimal, generators, cycles, 300-deep nesting, a model that cannot "
                f"dump) as input (+3 through a pydantic schema), step output and workflow output: "
                f"{refused}/{total} rejected with PayloadError naming the workflow (and step) and "
                f"the type or value; 0 runs created, 0 completed attempts, 0 outputs stored"
            ),
        )
    )


class Color(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Name(str):
    pass


class Ratio(float):
    pass


@dataclasses.dataclass
class Point:
    x: int
    tags: tuple[str, ...]


class Reading(BaseModel):
    at: datetime
    values: tuple[float, ...]


SAMPLES: list[Any] = [
    (1, "two", (3.0,)),
    Color.RED,
    Level.HIGH,
    Name("plain"),
    Ratio(0.5),
    Point(1, ("a", "b")),
    Reading(at=datetime(2026, 1, 2, 3, 4, 5).astimezone(), values=(1.5, 2.0)),
    -0.0,
    1e16,
    -2.5e20,
    1.7976931348623157e308,
    5e-324,
    2**53 - 1,
    -(2**53 - 1),
    OrderedDict(b=1, a=2),
    {"nested": {"tuple": (None, True, False)}, "empty": {}, "list": []},
    "",
    "émoji 🚀 \u202e rtl \u200b zero-width \\u0000 literal",
    None,
    12.0,
]

SEEN: dict[str, list[Any]] = {}


def typed(value: Any) -> Any:
    """The value with every type spelled out (so 1 != 1.0, -0.0 != 0.0, tuple != list)."""
    if isinstance(value, dict):
        return ("dict", [(typed(key), typed(item)) for key, item in value.items()])
    if isinstance(value, list | tuple):
        return (type(value).__name__, [typed(item) for item in value])
    return (type(value).__name__, repr(value))


def _sample(index: int) -> Any:
    return SAMPLES[index]


@workflow(name="faults-types")
async def types_flow(step: Step, run: RunInfo) -> int:
    values = [await step.run(f"v{i}", functools.partial(_sample, i)) for i in range(len(SAMPLES))]
    SEEN.setdefault(run.id, []).append([typed(value) for value in values])
    await step.sleep("replay-me", "1ms")  # the run parks; the next pass is a replay
    return len(values)


async def test_first_run_replay_and_storage_see_the_same_types(
    backend: Any, backend_kind: str
) -> None:
    """F8: Tuples, enums, str/float subclasses, models, -0.0 and big floats: one type everywhere."""
    ow = OpenWorkflow(backend)
    handle = await ow.run(types_flow)
    async with ow.new_worker([types_flow], concurrency=1):
        assert await handle.result(timeout="60s") == len(SAMPLES)
    first, replay = SEEN.pop(handle.id)[:2]
    stored = {
        step.step_name: typed(step.output)
        for step in (await ow.list_steps(handle.id, limit=100)).data
        if step.kind == "function"
    }
    mismatches = [
        repr(SAMPLES[i])
        for i in range(len(SAMPLES))
        if not first[i] == replay[i] == stored[f"v{i}"]
    ]
    counted = await tally(backend, {handle.id: Expected(output=len(SAMPLES))})
    assert counted.lost == 0 and counted.duplicated == 0, counted
    assert not mismatches, mismatches
    tuple_like = first[0]
    assert tuple_like[0] == "list"  # the round-tripped value, on the first run too
    assert first[7] == ("float", "0.0")  # -0.0 is stored (and returned) as 0.0
    assert first[8] == ("float", "1e+16")  # PostgreSQL jsonb would have made it an int
    report(
        Figure(
            "F8",
            f"first run vs replay vs stored types ({backend_kind})",
            runs=1,
            faults=0,
            lost=counted.lost,
            duplicated=len(mismatches) + counted.duplicated,
            details=(
                f"{len(SAMPLES)} step results (tuples, StrEnum, IntEnum, str and float "
                "subclasses, dataclass, pydantic model, -0.0, floats of 1e16 and 1.8e308, "
                "±(2**53-1), OrderedDict, unicode): type mismatches between first run, replay "
                f"and storage {len(mismatches)}"
            ),
        )
    )


# -- F9 ----------------------------------------------------------------------------------------


@workflow(name="faults-sized-step")
async def sized_step(input: int, step: Step) -> int:
    blob = await step.run("make", lambda: {"blob": "x" * input})
    return len(blob["blob"])


@workflow(name="faults-sized-output")
async def sized_output(input: int) -> dict[str, str]:
    return {"blob": "x" * input}


SIZES = {"1 KiB": KIB, "300 KiB": 300 * KIB, "2 MiB + 1": 2 * MIB + 1, "16 MiB": 16 * MIB}


async def test_huge_payloads_warn_then_are_refused_before_any_write(
    backend: Any, backend_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """F9: 1 KiB / 300 KiB / 2 MiB+1 / 16 MiB as input, step output and output.

    Warned about, then refused before any write.
    """
    caplog.set_level(logging.WARNING, logger="openworkflow.payload")
    ow = OpenWorkflow(backend)
    outcome: dict[str, str] = {}
    written_when_refused = 0
    for label, size in SIZES.items():
        before = await _runs(ow)
        try:
            await ow.run(untyped, {"blob": "x" * size})
            outcome[f"input {label}"] = "accepted"
        except PayloadError as error:
            outcome[f"input {label}"] = "refused"
            _check_too_large(str(error), "input for workflow 'faults-untyped'")
            written_when_refused += await _runs(ow) - before
    handles = {}
    for label, size in SIZES.items():
        handles[f"step {label}"] = await ow.run(sized_step, size)
        handles[f"output {label}"] = await ow.run(sized_output, size)
    async with ow.new_worker([sized_step, sized_output], concurrency=4):
        for key, handle in handles.items():
            try:
                await handle.result(timeout="60s")
                outcome[key] = "accepted"
            except WorkflowFailedError as error:
                outcome[key] = "refused"
                where = (
                    "step 'make' of workflow 'faults-sized-step'"
                    if key.startswith("step")
                    else "workflow 'faults-sized-output'"
                )
                _check_too_large(str(error), where)
                run = await ow.get_run(handle.id)
                assert run is not None
                written_when_refused += run.output is not None
                written_when_refused += len(await _completed_attempts(ow, handle.id))
    warnings = [r for r in caplog.records if "payload warning size" in r.getMessage()]
    expected = {
        key: "refused" if ("2 MiB" in key or "16 MiB" in key) else "accepted" for key in outcome
    }
    # Read back: accepted runs completed, refused ones failed, no step completed twice.
    counted = await tally(
        backend,
        {
            handle.id: Expected("failed" if expected[key] == "refused" else "completed")
            for key, handle in handles.items()
        },
    )
    assert outcome == expected
    assert written_when_refused == 0
    assert len(warnings) >= 3  # the 300 KiB input, step output and workflow output
    assert any("input for workflow 'faults-untyped'" in r.getMessage() for r in warnings)
    assert not any("1 KiB" in key for key in [r.getMessage() for r in warnings])

    # The limits can be changed: through the API, the environment and the config file.
    set_payload_limits(PayloadLimits(warn_size=1000, max_size=4000))
    with pytest.raises(PayloadError, match=r"over the 3\.9 KiB \(4000 bytes\) payload limit"):
        await ow.run(untyped, "y" * 5000)
    set_payload_limits(PayloadLimits(warn_size=None, max_size=None))
    await ow.run(untyped, "z" * (3 * MIB))  # limits off: accepted
    report(
        Figure(
            "F9",
            f"huge payloads ({backend_kind})",
            runs=len(outcome),
            faults=sum(value == "refused" for value in outcome.values()),
            lost=written_when_refused + counted.lost,
            duplicated=counted.duplicated,
            details=(
                "1 KiB / 300 KiB / 2 MiB+1 / 16 MiB as input, step output and workflow output: "
                f"warned at 300 KiB ({len(warnings)} warnings naming what), refused above "
                "2 MiB 6/6 before any write (error names the size, the limit, and "
                f"{MAX_SIZE_VARIABLE} / define_config(payload=...) / set_payload_limits), "
                f"{written_when_refused} rows written; limits changed through the API take "
                "effect"
            ),
        )
    )
    assert counted.lost == 0 and counted.duplicated == 0, counted


def _check_too_large(message: str, where: str) -> None:
    assert where in message, message
    assert "payload limit" in message and "bytes)" in message, message
    assert "2 MiB (2097152 bytes)" in message, message
    assert MAX_SIZE_VARIABLE in message and "define_config(payload=" in message, message


def test_payload_limits_come_from_environment_then_config_then_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F9: Precedence and validation of the payload limits in settings."""
    (tmp_path / "project").mkdir()
    (tmp_path / "elsewhere").mkdir()
    path = tmp_path / "project" / "openworkflow.config.py"
    path.write_text(
        "from openworkflow import define_config\n"
        "config = define_config(payload={'warn_size': '100KiB', 'max_size': '1MiB'})\n",
        encoding="utf-8",
    )
    from_file = resolve_settings(load_config(cwd=tmp_path / "project")).payload_limits
    assert from_file == PayloadLimits(warn_size=100 * KIB, max_size=MIB)
    monkeypatch.setenv(MAX_SIZE_VARIABLE, "512KB")
    from_env = resolve_settings(load_config(cwd=tmp_path / "project")).payload_limits
    assert from_env == PayloadLimits(warn_size=100 * KIB, max_size=512_000)
    monkeypatch.setenv(MAX_SIZE_VARIABLE, "off")
    assert resolve_settings(load_config(cwd=tmp_path / "project")).payload_limits.max_size is None
    monkeypatch.setenv(MAX_SIZE_VARIABLE, "10KiB")  # below the file's warn size
    with pytest.raises(
        ConfigError, match=f"warn_size .* must not exceed max_size.*{MAX_SIZE_VARIABLE}"
    ):
        resolve_settings(load_config(cwd=tmp_path / "project"))
    monkeypatch.setenv(MAX_SIZE_VARIABLE, "huge")
    with pytest.raises(ConfigError, match=MAX_SIZE_VARIABLE):
        resolve_settings(load_config(cwd=tmp_path / "project"))
    monkeypatch.delenv(MAX_SIZE_VARIABLE)
    assert (
        resolve_settings(load_config(cwd=tmp_path / "elsewhere")).payload_limits == PayloadLimits()
    )
    with pytest.raises(ConfigError, match=r"payload\.max_size"):
        define_config(payload={"max_size": "1 parsec"})
    with pytest.raises(ConfigError, match=r"payload\.maximum"):
        define_config(payload={"maximum": "1MiB"})
    # A library user without the CLI: the environment alone.
    monkeypatch.setenv(MAX_SIZE_VARIABLE, "64KiB")
    set_payload_limits(None)
    with pytest.raises(PayloadError, match="64 KiB"):
        untyped.spec.validate_input("q" * (100 * KIB), current_limits())
    report(
        Figure(
            "F9",
            "payload limits from environment, config file and defaults",
            runs=0,
            faults=4,
            details=(
                "precedence environment > config file > defaults holds; 4 bad settings (max "
                "below warn, 'huge', '1 parsec', an unknown key) refused with ConfigError naming "
                "the variable or key; lost/duplicated: not applicable (no runs)"
            ),
        )
    )


# -- F12 ---------------------------------------------------------------------------------------

GHOST = declare_workflow("faults-ghost", version="2")


@workflow(name="faults-ghost", version="1")
async def ghost_v1(input: int) -> str:
    return f"v1 {input}"


@GHOST.implement
async def ghost_v2(input: int, step: Step) -> str:
    return str(await step.run("answer", lambda: f"v2 {input}"))


@workflow(name="faults-known")
async def known(input: int) -> int:
    return input + 1


async def test_unknown_workflows_are_rescheduled_until_a_capable_worker_comes(
    backend: Any, backend_kind: str, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """F12: runs of an unregistered (name, version).

    No crash, no attempt, a warning, picked up later.
    """
    caplog.set_level(logging.WARNING, logger="openworkflow")
    ow = OpenWorkflow(backend)
    ghosts = [await ow.run(GHOST, number) for number in range(20)]
    unnamed = [await ow.run("faults-nobody-has-this", None) for _ in range(5)]
    first_known = await ow.run(known, 1)
    async with ow.new_worker([known, ghost_v1], concurrency=4):
        assert await first_known.result(timeout="30s") == 2

        async def rescheduled() -> bool:
            for handle in [*ghosts, *unnamed]:
                run = await ow.get_run(handle.id)
                if run is None or run.attempts < 1 or run.status != "pending":
                    return False
            return True

        await wait_until(
            rescheduled,
            timeout=30.0,
            message="every unknown run to be rescheduled once",
            interval=0.05,
        )
        # The worker is alive and still executes what it knows.
        assert await (await ow.run(known, 41)).result(timeout="30s") == 42

    unknown_runs = [await ow.get_run(handle.id) for handle in [*ghosts, *unnamed]]
    reschedules = sum(run.attempts for run in unknown_runs if run is not None)
    step_attempts = 0
    for handle in [*ghosts, *unnamed]:
        step_attempts += len((await ow.list_steps(handle.id)).data)
    failed = sum(run is not None and run.status == "failed" for run in unknown_runs)
    assert step_attempts == 0 and failed == 0
    assert all(run is not None and "is not registered" in str(run.error) for run in unknown_runs)
    warnings = [r for r in caplog.records if "is not registered" in r.getMessage()]
    assert len(warnings) == 2  # once per unknown (name, version), not once per reschedule
    assert any('"faults-ghost" (version: 2)' in r.getMessage() for r in warnings), [
        r.getMessage() for r in warnings[:3]
    ]

    clock.advance(timedelta(minutes=6))  # past the longest backoff (5 min)
    async with ow.new_worker([ghost_v2], concurrency=8):
        outputs = [await handle.result(timeout="60s") for handle in ghosts]
    expected = {h.id: Expected(output=f"v2 {n}") for n, h in enumerate(ghosts)}
    counted = await tally(backend, expected | {h.id: Expected("pending") for h in unnamed})
    still_pending = [await ow.get_run(handle.id) for handle in unnamed]
    report(
        Figure(
            "F12",
            f"unknown workflow name or version ({backend_kind})",
            runs=len(unknown_runs),
            faults=reschedules,
            lost=counted.lost,
            duplicated=counted.duplicated,
            details=(
                f"20 runs of faults-ghost@2 on a worker with faults-ghost@1, 5 of an unknown "
                f"name: worker crashes 0 (it ran other work meanwhile), step attempts 0, runs "
                f"failed 0, {len(warnings)} warnings (one per unknown name and version), "
                f"{reschedules} reschedules with the 5 s..5 min backoff (each claim counts in "
                f"`attempts`, as upstream); {sum(o == f'v2 {n}' for n, o in enumerate(outputs))}"
                "/20 completed once a worker with faults-ghost@2 started"
            ),
        )
    )
    assert counted.lost == 0 and counted.duplicated == 0, counted
    assert outputs == [f"v2 {number}" for number in range(20)]
    assert all(run is not None and run.status == "pending" for run in still_pending), [
        (run.status, run.worker_id, run.error) if run else None for run in still_pending
    ]


def test_bad_values_from_the_command_line_are_usage_errors(tmp_path: Path) -> None:
    """F8: ``ow run --input`` / ``ow signal send --data`` with NaN or huge ints: exit 2, no run."""
    from tests.cli.helpers import clean_env, ow, write

    write(
        tmp_path / "openworkflow.config.py",
        "from openworkflow import define_config\n"
        "config = define_config(backend='sqlite:///cli.db')\n",
    )
    env = clean_env()
    cases = [
        ("run", "faults-cli", "--input", '{"a": NaN}'),
        ("run", "faults-cli", "--input", "[Infinity]"),
        ("run", "faults-cli", "--input", '{"id": 123456789012345678901}'),
        ("run", "faults-cli", "--input", '"a\\u0000b"'),
        ("signal", "send", "faults-cli", "--data", '{"x": -Infinity}'),
    ]
    for args in cases:
        result = ow(tmp_path, *args, env=env)
        assert result.returncode == 2, (args, result.stderr)
        assert "cannot be stored as JSON" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
    listed = ow(tmp_path, "runs", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    created = len(json.loads(listed.stdout)["data"])  # read back from the database
    report(
        Figure(
            "F8",
            "non-JSON values from the command line",
            runs=len(cases),
            faults=len(cases),
            lost=created,
            details=(
                f"ow run --input / ow signal send --data with NaN, Infinity, an int beyond "
                f"2**53 and a NUL: exit 2 {len(cases)}/{len(cases)} with the JSON problem named, "
                f"no traceback, {created} runs created (wrong acceptances counted as lost)"
            ),
        )
    )
    assert created == 0, listed.stdout
