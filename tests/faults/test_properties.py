"""Property-based checks (hypothesis) of names and payloads, on SQLite and PostgreSQL.

The documented rules, written here independently of the engine's code:

- a payload is stored when it is made of None, bools, ints within ±(2**53 - 1),
  finite floats, strings without NUL or lone surrogates, lists/tuples, and
  dicts whose keys are such strings (str/int/float subclasses count as their
  plain values); it reads back as plain JSON: tuples are lists, ``-0.0`` is
  ``0.0``, subclasses are their base type. Anything else raises
  ``PayloadError`` and writes nothing.
- a name (workflow name, idempotency key) is stored when it is a string
  without NUL or lone surrogates of at most 512 UTF-8 bytes (and a workflow
  name is not blank); it reads back byte for byte. Otherwise a validation
  error is raised and nothing is written.

Accepted payloads must read back identical (types included) when stored as
input, and as step output on the first run, on replay and in storage.
Runs are deterministic (``derandomize=True``) with modest example counts.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import math
import threading
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openworkflow import (
    OpenWorkflow,
    PostgresBackend,
    RunInfo,
    SqliteBackend,
    Step,
    declare_workflow,
    workflow,
)
from openworkflow.core.json import MAX_NAME_BYTES, MAX_SAFE_INTEGER
from openworkflow.errors import (
    InvalidNameError,
    PayloadError,
    WorkflowDefinitionError,
    WorkflowFailedError,
)
from tests.faults.figures import Figure, report
from tests.fixtures.postgres import TEST_SCHEMA, prepare_server

T = TypeVar("T")


def deterministic(max_examples: int) -> settings:
    """Fixed examples (derandomized, no example database), no deadline, a modest count."""
    return settings(
        derandomize=True,
        database=None,
        deadline=None,
        max_examples=max_examples,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


class Shade(enum.StrEnum):
    DARK = "dark"


class Rank(enum.IntEnum):
    FIRST = 1


class Label(str):
    pass


# -- the rules, as an oracle ---------------------------------------------------------------------

_REFUSED = object()


def _text_ok(text: str) -> bool:
    return "\x00" not in text and not any(0xD800 <= ord(char) <= 0xDFFF for char in text)


def expected(value: Any) -> Any:  # noqa: PLR0911
    """What reading ``value`` back must give, or ``_REFUSED``."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value) if _text_ok(value) else _REFUSED
    if isinstance(value, int):
        return int(value) if abs(value) <= MAX_SAFE_INTEGER else _REFUSED
    if isinstance(value, float):
        if not math.isfinite(value):
            return _REFUSED
        return 0.0 if value == 0 else float(value)
    if isinstance(value, list | tuple):
        items = [expected(item) for item in value]
        return _REFUSED if any(item is _REFUSED for item in items) else items
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str) or not _text_ok(key):
                return _REFUSED
            converted = expected(item)
            if converted is _REFUSED:
                return _REFUSED
            out[str.__str__(key)] = converted
        return out
    return _REFUSED


def name_ok(name: str, *, workflow_name: bool = False) -> bool:
    if workflow_name and not name.strip():
        return False
    return _text_ok(name) and len(name.encode("utf-8")) <= MAX_NAME_BYTES


def typed(value: Any) -> Any:
    """The value with its types spelled out (1 != 1.0, -0.0 != 0.0, tuple != list).

    Object keys are compared as a set: PostgreSQL's jsonb keeps them sorted (by
    length, then bytes), not in insertion order, as JSON allows.
    """
    if isinstance(value, dict):
        return ("dict", sorted((typed(key), typed(item)) for key, item in value.items()))
    if isinstance(value, list | tuple):
        return (type(value).__name__, [typed(item) for item in value])
    return (type(value).__name__, repr(value))


# -- strategies ----------------------------------------------------------------------------------

_NASTY = ["\x00", "\ud800", "\udc80", "\U0010ffff", '"', "'", "\\", "%", ";", "\u202e", "é"]
_ALPHABET = st.one_of(st.characters(), st.sampled_from(_NASTY))
_GOOD_TEXT = st.text(st.characters(exclude_characters="\x00"), max_size=12)

good_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER),
    st.floats(allow_nan=False, allow_infinity=False),
    _GOOD_TEXT,
    st.sampled_from([Shade.DARK, Rank.FIRST, Label("plain"), -0.0, 1e16, 2.5e300, 5e-324]),
)
bad_scalars = st.one_of(
    st.integers(min_value=MAX_SAFE_INTEGER + 1, max_value=2**70),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), b"bytes", {1, 2}, object()]),
    st.text(_ALPHABET, min_size=1, max_size=8),
)


def _containers(children: st.SearchStrategy[Any], keys: st.SearchStrategy[Any]) -> Any:
    return st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(keys, children, max_size=4),
    )


good_values = st.recursive(
    good_scalars, lambda children: _containers(children, _GOOD_TEXT), max_leaves=12
)
any_values = st.recursive(
    st.one_of(good_scalars, bad_scalars),
    lambda children: _containers(
        children, st.one_of(st.text(_ALPHABET, max_size=6), st.integers(0, 3))
    ),
    max_leaves=10,
)
names = st.one_of(
    st.text(_ALPHABET, min_size=0, max_size=20),
    st.builds(lambda n: "é" * n, st.integers(250, 260)),  # around the 512-byte limit
)


# -- harness: the backend and a worker on their own event loop -----------------------------------


class _LoopThread:
    """An event loop in a thread, so hypothesis (synchronous) can drive async code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Harness:
    kind: str
    loop: _LoopThread
    client: OpenWorkflow


REGISTRY: dict[str, list[Any]] = {}
SEEN: dict[str, list[list[Any]]] = {}


@workflow(name="faults-prop-input", schema=None)
async def prop_input(input: Any) -> Any:
    return input


def _same(value: Any) -> Any:
    return value


@workflow(name="faults-prop-steps")
async def prop_steps(input: str, step: Step, run: RunInfo) -> int:
    values = REGISTRY[input]
    results = [await step.run(f"v{i}", functools.partial(_same, v)) for i, v in enumerate(values)]
    passes = SEEN.setdefault(run.id, [])
    passes.append([typed(value) for value in results])
    if len(passes) == 1:
        # End the first pass; the test resumes the run (ow.retry), which replays every step.
        raise RuntimeError("first pass ends here")
    return len(results)


@pytest.fixture(params=["sqlite", "postgres"])
def harness(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Harness]:
    kind = str(request.param)
    loop = _LoopThread()
    namespace = f"prop-{uuid.uuid4()}"

    async def start() -> OpenWorkflow:
        backend: Any = (
            SqliteBackend(str(tmp_path / "prop.db"), namespace_id=namespace)
            if kind == "sqlite"
            else PostgresBackend(prepare_server(), namespace_id=namespace, schema=TEST_SCHEMA)
        )
        return OpenWorkflow(backend)

    client = loop.call(start())
    try:
        yield Harness(kind, loop, client)
    finally:
        loop.call(client.backend.stop())
        loop.close()


def _with_worker(harness: Harness, coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` while a worker runs; none runs between examples.

    An idle worker draws poll jitter from ``random``, which hypothesis forbids
    while it generates an example.
    """

    async def body() -> T:
        async with harness.client.new_worker([prop_steps], concurrency=2):
            return await coroutine

    return harness.loop.call(body())


async def _run_count(client: OpenWorkflow) -> int:
    counts = await client.counts()
    return sum(int(getattr(counts, status)) for status in ("pending", "running", "completed"))


async def _twice(client: OpenWorkflow, run_id: str) -> Any:
    """Let the run's first pass fail, resume it (a replay of every step), return its output."""
    handle = client.handle(run_id)
    with pytest.raises(WorkflowFailedError, match="first pass ends here"):
        await handle.result(timeout="60s")
    await client.retry(run_id)
    return await handle.result(timeout="60s")


# -- properties ----------------------------------------------------------------------------------


def test_property_payloads_as_input_round_trip_or_are_refused(harness: Harness) -> None:
    """Any value as workflow input: stored exactly as the rules say, or PayloadError, 0 rows."""
    tally = {"accepted": 0, "refused": 0, "mismatches": 0, "written_when_refused": 0}

    @deterministic(300)
    @given(any_values)
    def check(value: Any) -> None:
        want = expected(value)
        before = harness.loop.call(_run_count(harness.client))
        try:
            handle = harness.loop.call(harness.client.run(prop_input, value))
        except PayloadError:
            assert want is _REFUSED, f"refused although the rules accept {value!r}"
            tally["refused"] += 1
            after = harness.loop.call(_run_count(harness.client))
            tally["written_when_refused"] += after - before
            assert after == before
            return
        assert want is not _REFUSED, f"accepted although the rules refuse {value!r}"
        tally["accepted"] += 1
        run = harness.loop.call(harness.client.get_run(handle.id))
        assert run is not None and handle.workflow_run is not None
        if not typed(run.input) == typed(handle.workflow_run.input) == typed(want):
            tally["mismatches"] += 1
        assert typed(run.input) == typed(want)
        assert typed(handle.workflow_run.input) == typed(want)

    check()
    report(
        Figure(
            "F8",
            f"property: payloads as input ({harness.kind})",
            runs=tally["accepted"] + tally["refused"],
            faults=tally["refused"],
            lost=tally["written_when_refused"],
            duplicated=tally["mismatches"],
            details=(
                f"hypothesis, derandomized: {tally['accepted']} accepted values read back "
                f"type-exact, {tally['refused']} refused with PayloadError exactly where the "
                "documented rules refuse, 0 rows written for them"
            ),
        )
    )


def test_property_names_round_trip_byte_equal_or_are_refused(harness: Harness) -> None:
    """Workflow names and idempotency keys: byte-equal and found again, or refused, 0 rows."""
    tally = {"accepted": 0, "refused": 0, "written_when_refused": 0, "second_runs": 0}

    @deterministic(200)
    @given(names, names)
    def check(name: str, key: str) -> None:
        ok = name_ok(name, workflow_name=True) and name_ok(key)
        before = harness.loop.call(_run_count(harness.client))
        try:
            handle = harness.loop.call(
                harness.client.run(declare_workflow(name), None, idempotency_key=key)
            )
        except (InvalidNameError, WorkflowDefinitionError) as error:
            assert not ok, f"refused {name!r}/{key!r}: {error}"
            tally["written_when_refused"] += harness.loop.call(_run_count(harness.client)) - before
            assert tally["written_when_refused"] == 0
            tally["refused"] += 1
            return
        assert ok, f"accepted {name!r}/{key!r}"
        run = harness.loop.call(harness.client.get_run(handle.id))
        assert run is not None
        assert run.workflow_name.encode() == name.encode()
        assert (run.idempotency_key or "").encode() == key.encode()
        again = harness.loop.call(
            harness.client.run(declare_workflow(name), None, idempotency_key=key)
        )
        tally["second_runs"] += again.id != handle.id  # one key, two runs
        assert again.id == handle.id
        tally["accepted"] += 1

    check()
    report(
        Figure(
            "F14",
            f"property: names ({harness.kind})",
            runs=tally["accepted"] + tally["refused"],
            faults=tally["refused"],
            lost=tally["written_when_refused"],
            duplicated=tally["second_runs"],
            details=(
                f"hypothesis, derandomized, workflow names x idempotency keys with NUL, "
                f"surrogates, quotes, %, bidi, 512-byte edges: {tally['accepted']} stored "
                f"byte-equal and found again by key, {tally['refused']} refused by a "
                "validation error, 0 database errors"
            ),
        )
    )


def test_property_step_outputs_are_identical_on_first_run_replay_and_storage(
    harness: Harness,
) -> None:
    """Accepted values returned by steps: the same types on first run, on replay, as stored."""
    tally = {"values": 0, "mismatches": 0, "lost": 0, "duplicated": 0}

    @deterministic(50)
    @given(st.lists(good_values, min_size=1, max_size=6))
    def check(values: list[Any]) -> None:
        token = str(uuid.uuid4())
        REGISTRY[token] = values
        try:
            handle = harness.loop.call(harness.client.run(prop_steps, token))
            result = _with_worker(harness, _twice(harness.client, handle.id))
        finally:
            REGISTRY.pop(token)
        steps = harness.loop.call(harness.client.list_steps(handle.id, limit=100)).data
        completed = [step.step_name for step in steps if step.is_completed]
        tally["lost"] += result != len(values)
        tally["duplicated"] += len(completed) - len(set(completed))
        assert result == len(values)
        assert len(completed) == len(set(completed)), completed
        first, replay = SEEN.pop(handle.id)[:2]
        stored = {step.step_name: typed(step.output) for step in steps if step.kind == "function"}
        for index, value in enumerate(values):
            tally["values"] += 1
            want = typed(expected(value))
            if not first[index] == replay[index] == stored[f"v{index}"] == want:
                tally["mismatches"] += 1
            assert first[index] == replay[index] == stored[f"v{index}"] == want, value

    check()
    report(
        Figure(
            "F8",
            f"property: step outputs first run = replay = stored ({harness.kind})",
            runs=tally["values"],
            faults=0,
            lost=tally["lost"],
            duplicated=tally["mismatches"] + tally["duplicated"],
            details=(
                f"hypothesis, derandomized: {tally['values']} generated step results (nested "
                "dicts/lists/tuples, enums, str subclasses, -0.0, big and tiny floats, unicode): "
                f"type mismatches between first run, replay and storage {tally['mismatches']}"
            ),
        )
    )
