"""A worker's clock on PostgreSQL is the database's (F7): due times it writes are database times.

The estimate (:mod:`openworkflow.worker.db_clock`) comes from the claims' and
renewals' ``NOW()`` stamps, timed on the worker's clock; it errs late, never
early. End to end (PostgreSQL, in this process, the engine clock shifted with
:func:`openworkflow.core.clock.set_offset` as on a host whose clock is off):
a sleep's stored wake-up is its duration after the database's time, and a
run handed back at shutdown is due at once by the database's clock. SQLite
workers keep their own clock (it is the database's there).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from openworkflow import OpenWorkflow, SqliteBackend, Step, workflow
from openworkflow.core import clock
from openworkflow.core.backend import ClaimWorkflowRunsParams, ExtendWorkflowRunLeaseParams
from openworkflow.core.waits import WaitContext
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.postgres import PostgresBackend
from openworkflow.worker import db_clock
from openworkflow.worker.db_clock import DatabaseClock, stamps_database_time
from tests.support.waiting import wait_until
from tests.worker.helpers import get_run, list_steps, running_worker

SKEW = timedelta(minutes=5)
START = datetime(2026, 1, 1, tzinfo=UTC)


def _stamped(at: datetime) -> WorkflowRun:
    """A run as a statement stamped it with ``NOW() = at`` (only ``updated_at`` is read)."""
    return dataclasses.replace(_TEMPLATE, updated_at=at)


_TEMPLATE = WorkflowRun(
    namespace_id="ns",
    id="run",
    workflow_name="w",
    version=None,
    status="running",
    idempotency_key=None,
    config={},
    context=None,
    input=None,
    output=None,
    error=None,
    attempts=1,
    parent_step_attempt_namespace_id=None,
    parent_step_attempt_id=None,
    worker_id="slot",
    available_at=START,
    deadline_at=None,
    started_at=START,
    finished_at=None,
    created_at=START,
    updated_at=START,
)


@contextlib.contextmanager
def engine_clock_off_by(offset: timedelta) -> Iterator[None]:
    """This process's engine clock ``offset`` ahead of the real (and the database's) time."""
    clock.set_offset(offset)
    try:
        yield
    finally:
        clock.set_offset(None)


def test_the_estimate_is_the_tightest_upper_bound_seen() -> None:
    estimate = DatabaseClock()
    local = clock.uncorrected_now()
    # Sent at `local`; the database stamped 10 s after (its clock is ahead by 10 s,
    # less the time the statement took to get there).
    estimate.observe(local, [_stamped(clock.truncate_ms(local + timedelta(seconds=10)))])
    first = estimate.offset()
    assert timedelta(seconds=10) <= first <= timedelta(seconds=10, milliseconds=1)
    # A later sample with a longer trip to the database: a looser bound, not taken.
    sent = clock.uncorrected_now()
    trip = timedelta(seconds=10, milliseconds=50)
    estimate.observe(sent, [_stamped(clock.truncate_ms(sent + trip))])
    assert estimate.offset() == first
    # The early bound (the reply's time) never passes the late one.
    assert estimate.earliest_now() <= estimate.now()
    assert estimate.now() - clock.now() >= timedelta(seconds=10) - timedelta(milliseconds=1)


def test_a_stamp_to_the_microsecond_narrows_the_estimate_to_the_round_trip() -> None:
    truncated, precise = DatabaseClock(), DatabaseClock()
    sent = clock.truncate_ms(clock.precise_uncorrected_now())
    at = sent + timedelta(seconds=10, microseconds=400)
    truncated.observe(sent, [_stamped(clock.truncate_ms(at))])
    precise.observe(sent, [dataclasses.replace(_stamped(clock.truncate_ms(at)), stamped_at=at)])
    # The true offset is 10 s 0.4 ms less the trip there: the stamp to the
    # microsecond is an upper bound within the trip, the truncated one within
    # the trip and a millisecond more; both bounds are true ones.
    assert precise.offset() == timedelta(seconds=10, microseconds=400)
    assert truncated.offset() == timedelta(seconds=10, milliseconds=1)
    assert precise.uncertainty() < truncated.uncertainty()
    assert precise.uncertainty() < timedelta(milliseconds=50)  # the trip, on any machine


def test_a_wait_before_the_statement_went_out_is_not_taken_for_the_trip() -> None:
    plain, told = DatabaseClock(), DatabaseClock()
    called = clock.precise_uncorrected_now() - timedelta(milliseconds=100)
    went_out = called + timedelta(milliseconds=90)  # a pooled connection was opened first
    at = went_out + timedelta(seconds=10, microseconds=300)
    stamped = dataclasses.replace(_stamped(clock.truncate_ms(at)), stamped_at=at)
    plain.observe(called, [stamped])
    told.observe(called, [dataclasses.replace(stamped, sent_at=went_out)])
    # Without the send time the 90 ms wait widens the bounds (and the late estimate).
    assert plain.offset() >= timedelta(seconds=10, milliseconds=90)
    assert told.offset() == timedelta(seconds=10, microseconds=300)
    assert told.uncertainty() < plain.uncertainty() - timedelta(milliseconds=80)


async def test_postgres_claims_and_renewals_carry_the_microsecond_stamp(
    backend: Any, backend_kind: str
) -> None:
    _require_postgres(backend_kind)
    client = OpenWorkflow(backend)
    await client.run(nap, None)
    sent = clock.precise_uncorrected_now()
    (claimed,) = await backend.claim_workflow_runs(
        ClaimWorkflowRunsParams(worker_ids=["slot-1"], lease_duration_ms=30_000)
    )
    assert claimed.stamped_at is not None
    assert clock.truncate_ms(claimed.stamped_at) == claimed.updated_at
    renewed = await backend.extend_workflow_run_lease(
        ExtendWorkflowRunLeaseParams(
            workflow_run_id=claimed.id, worker_id="slot-1", lease_duration_ms=30_000
        )
    )
    assert renewed.stamped_at is not None and renewed.stamped_at >= claimed.stamped_at
    # Same machine, same clock: both readings fall within the round trip, in order.
    assert claimed.returned_at is not None and renewed.returned_at is not None
    assert sent <= claimed.stamped_at <= claimed.returned_at <= renewed.stamped_at
    assert renewed.stamped_at <= renewed.returned_at <= clock.precise_uncorrected_now()
    # The statements' own send times: after the call began, before the database stamped.
    assert claimed.sent_at is not None and renewed.sent_at is not None
    assert sent <= claimed.sent_at <= claimed.stamped_at
    assert claimed.returned_at <= renewed.sent_at <= renewed.stamped_at
    estimate = DatabaseClock()
    estimate.observe(sent, [claimed])
    # The bounds are apart by the claim's round trip less its time in the database.
    assert estimate.uncertainty() < clock.precise_uncorrected_now() - sent


def test_old_samples_stop_counting(monkeypatch: pytest.MonkeyPatch) -> None:
    moments = iter([0.0, db_clock.WINDOW_S + 1.0])
    monkeypatch.setattr(db_clock.time, "monotonic", lambda: next(moments))
    estimate = DatabaseClock()
    local = clock.uncorrected_now()
    estimate.observe(local, [_stamped(clock.truncate_ms(local + timedelta(seconds=5)))])
    # The host's clock was set (NTP): the database is now 2 s ahead, not 5.
    local = clock.uncorrected_now()
    estimate.observe(local, [_stamped(clock.truncate_ms(local + timedelta(seconds=2)))])
    assert timedelta(seconds=2) <= estimate.offset() < timedelta(seconds=3)


def test_now_is_corrected_only_in_the_worker_s_contexts() -> None:
    estimate = DatabaseClock()
    local = clock.uncorrected_now()
    estimate.observe(local, [_stamped(clock.truncate_ms(local - SKEW))])
    inside = estimate.context().run(clock.now)
    outside = clock.now()
    assert outside - SKEW - timedelta(seconds=1) < inside <= outside - SKEW + timedelta(seconds=1)


def test_only_postgres_stamps_with_the_database_clock(tmp_path: Any) -> None:
    assert stamps_database_time(PostgresBackend("postgresql://localhost/x"))
    assert not stamps_database_time(SqliteBackend(str(tmp_path / "x.db")))
    assert not stamps_database_time(object())


@workflow(name="db-clock-nap")
async def nap(step: Step, input: None) -> str:
    """A durable sleep of 1 s."""
    await step.sleep("nap", "1s")
    return "rested"


_hold_gate = threading.Event()


@workflow(name="db-clock-hold")
async def hold(step: Step, input: None) -> str:
    """A step that holds its slot until the test opens the gate (or 10 s pass)."""
    await step.run("hold", lambda: _hold_gate.wait(10))
    return "held"


def _require_postgres(backend_kind: str) -> None:
    if backend_kind != "postgres":
        pytest.skip("the database's clock differs from the engine's on PostgreSQL only")


@pytest.mark.parametrize("skew", [SKEW, -SKEW], ids=["ahead", "behind"])
async def test_a_sleep_wakes_by_the_database_clock_whatever_the_worker_s(
    backend: Any, backend_kind: str, skew: timedelta
) -> None:
    _require_postgres(backend_kind)
    with engine_clock_off_by(skew):
        async with running_worker(backend, [nap]):
            handle = await OpenWorkflow(backend).run(nap, None)
            assert await handle.result(timeout="10s") == "rested"
    (sleep,) = [a for a in await list_steps(backend, handle.id) if a.step_name == "nap"]
    context = WaitContext.of(sleep)
    assert context is not None and context.until is not None
    # The attempt's created_at is the database's NOW() a moment after the wake-up
    # was computed: the wake-up is 1 s after it (not 5 min before or after), give
    # or take the insert's and the estimate's round trips.
    waited = context.until - sleep.created_at
    assert abs(waited - timedelta(seconds=1)) < timedelta(milliseconds=500), waited


async def test_a_worker_ahead_hands_runs_back_due_at_once_by_the_database_clock(
    backend: Any, backend_kind: str
) -> None:
    _require_postgres(backend_kind)
    _hold_gate.clear()
    try:
        with engine_clock_off_by(SKEW):
            async with running_worker(backend, [hold], shutdown_timeout="10ms") as worker:
                handle = await OpenWorkflow(backend).run(hold, None)
                await wait_until(lambda: handle.id in worker.active_run_ids)
            # Stopped: the run was handed back, due at once (not in 5 minutes).
            released = await get_run(backend, handle.id)
        assert released.worker_id is None and released.available_at is not None
        assert released.available_at <= released.updated_at, released
    finally:
        _hold_gate.set()
