"""``ow.run_many``: many runs started with one call, end to end on every backend.

Checked: handles in the order of the items; every item checked before any
write (a bad item names itself, nothing is written); options per item and
for the call; idempotency keys within the call and against earlier runs;
the blocking client; a worker finishing every run; tracing; and concurrent
``ow.run`` calls (which share one write) each getting their own run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from openworkflow import OpenWorkflow, Step, SyncOpenWorkflow, workflow
from openworkflow.client_batch import RunRequest
from openworkflow.errors import InputValidationError
from openworkflow.tracing import use_tracer_provider
from tests.fixtures.backends import backend_url
from tests.worker.helpers import get_run, now, running_worker


class Order(BaseModel):
    order_id: str
    amount: int = 0


@workflow(name="run-many-double")
async def double(input: int, step: Step) -> int:
    return await step.run("double", lambda: input * 2)


@workflow(name="run-many-order")
async def charge(input: Order) -> str:
    return f"charged {input.order_id}"


async def _run_count(ow: OpenWorkflow) -> int:
    counts = await ow.counts()
    return counts.pending + counts.running + counts.completed + counts.failed + counts.canceled


async def test_handles_come_back_in_order_and_a_worker_finishes_every_run(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    handles = await ow.run_many(double, range(30))

    assert [(await get_run(backend, handle.id)).input for handle in handles] == list(range(30))
    assert len({handle.id for handle in handles}) == 30
    async with running_worker(backend, [double], concurrency=10):
        results = await asyncio.gather(*(handle.result(timeout="20s") for handle in handles))
    assert results == [2 * n for n in range(30)]


async def test_an_empty_list_starts_nothing(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    assert await ow.run_many(double, []) == []
    assert await _run_count(ow) == 0


async def test_a_bad_item_names_itself_and_nothing_is_written(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    items: list[Any] = [{"order_id": "o-1"}, {"order_id": "o-2"}, {"amount": 5}]

    with pytest.raises(InputValidationError) as raised:
        await ow.run_many(charge, items)

    assert "order_id" in str(raised.value)
    assert any("run_many item 2 of 3" in note for note in raised.value.__notes__)
    bad_option = [
        RunRequest(input={"order_id": "o-3"}),
        RunRequest(input={"order_id": "o-4"}, available_at="soon"),
    ]
    with pytest.raises(Exception, match="soon") as option_error:
        await ow.run_many(charge, bad_option)  # type: ignore[list-item]
    assert any("item 1 of 2" in note for note in option_error.value.__notes__)
    assert await _run_count(ow) == 0


@pytest.mark.parametrize("items", ["abc", b"abc", {"order_id": "o-1"}])
async def test_a_single_input_instead_of_a_list_is_refused(backend: Any, items: Any) -> None:
    ow = OpenWorkflow(backend)
    with pytest.raises(TypeError, match="run_many takes a list"):
        await ow.run_many(charge, items)
    assert await _run_count(ow) == 0


async def test_options_per_item_override_the_calls(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    later = now() + timedelta(hours=1)
    handles = await ow.run_many(
        double,
        [1, RunRequest(input=2, priority=9, available_at=later, version="v2", tags={"b": "2"}), 3],
        priority=4,
        version="v1",
        deadline_at="2h",
        tags={"a": "1", "b": "1"},
    )

    runs = [await get_run(backend, handle.id) for handle in handles]
    assert [run.priority for run in runs] == [4, 9, 4]
    assert [run.version for run in runs] == ["v1", "v2", "v1"]
    assert runs[1].available_at == later
    assert runs[0].available_at is not None and runs[0].available_at <= now()
    assert all(run.deadline_at is not None for run in runs)
    tags = [await backend.get_run_tags(run.id) for run in runs]
    assert tags == [{"a": "1", "b": "1"}, {"a": "1", "b": "2"}, {"a": "1", "b": "1"}]
    plain = await ow.run_many(double, [5])
    stored = await get_run(backend, plain[0].id)
    assert (stored.priority, stored.version, stored.deadline_at) == (0, None, None)
    assert await backend.get_run_tags(stored.id) == {}


async def test_keys_give_one_run_within_the_call_and_with_earlier_runs(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    earlier = await ow.run(charge, {"order_id": "o-1"}, idempotency_key="o-1")
    orders = ["o-1", "o-2", "o-2", "o-3"]

    handles = await ow.run_many(
        charge,
        [
            RunRequest(input={"order_id": o, "amount": n}, idempotency_key=o)
            for n, o in enumerate(orders)
        ],
    )

    assert handles[0].id == earlier.id and handles[1].id == handles[2].id
    assert len({handle.id for handle in handles}) == 3
    assert (await get_run(backend, handles[1].id)).input == {"order_id": "o-2", "amount": 1}
    assert await _run_count(ow) == 3
    again = await ow.run(charge, {"order_id": "o-3"}, idempotency_key="o-3")
    assert again.id == handles[3].id


async def test_concurrent_run_many_calls_with_one_key_make_one_run(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    calls = [
        ow.run_many(charge, [RunRequest(input={"order_id": "x"}, idempotency_key="same")])
        for _ in range(10)
    ]
    singles = [ow.run(charge, {"order_id": "x"}, idempotency_key="same") for _ in range(10)]

    outcomes = await asyncio.gather(*calls, *singles)

    ids = {h[0].id for h in outcomes[:10]} | {h.id for h in outcomes[10:]}  # type: ignore[union-attr,index]
    assert len(ids) == 1 and await _run_count(ow) == 1


async def test_concurrent_runs_each_get_their_own_run(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    handles = await asyncio.gather(*(ow.run(double, n) for n in range(200)))

    assert len({handle.id for handle in handles}) == 200
    assert [(await get_run(backend, handle.id)).input for handle in handles] == list(range(200))
    keyed = await asyncio.gather(*(ow.run(double, n, idempotency_key="k") for n in range(50)))
    assert len({handle.id for handle in keyed}) == 1
    assert await _run_count(ow) == 201


async def test_the_blocking_client_starts_runs_in_bulk(backend: Any, backend_kind: str) -> None:
    if backend_kind == "sqlite_memory":
        pytest.skip("a ':memory:' SQLite database lives in one connection (see test_client)")
    url = backend_url(backend_kind, backend)
    assert url is not None
    namespace_id = backend.namespace_id

    def blocking_caller() -> tuple[list[str], list[Any]]:
        with SyncOpenWorkflow(url, namespace_id=namespace_id) as client:
            handles = client.run_many(double, [1, RunRequest(input=2, idempotency_key="k")])
            with pytest.raises(InputValidationError):
                client.run_many(charge, [{"order_id": "ok"}, {}])
            return [h.id for h in handles], [h.result(timeout="20s") for h in handles]

    async with running_worker(backend, [double, charge], concurrency=4):
        ids, results = await asyncio.to_thread(blocking_caller)
    assert results == [2, 4] and len(set(ids)) == 2
    assert await _run_count(OpenWorkflow(backend)) == 2


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        use_tracer_provider(None)


async def test_the_runs_join_the_callers_trace(backend: Any, spans: InMemorySpanExporter) -> None:
    ow = OpenWorkflow(backend)
    handles = await ow.run_many(double, [1, 2])
    async with running_worker(backend, [double], concurrency=2):
        await asyncio.gather(*(handle.result(timeout="10s") for handle in handles))

    finished = spans.get_finished_spans()
    (create,) = [span for span in finished if span.name == "workflow_run.create"]
    passes = [span for span in finished if span.name == "workflow_run.execute"]
    assert create.context is not None and len(passes) == 2
    assert all(span.context is not None for span in passes)
    assert {span.context.trace_id for span in passes} == {create.context.trace_id}  # type: ignore[union-attr]
    assert {span.parent.span_id for span in passes if span.parent} == {create.context.span_id}
