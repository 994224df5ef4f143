"""Worker SIGKILLs against the new features: concurrency, rate limits, schedules, sagas (F1).

Each test starts real worker processes (``tests/faults/feature_app.py``) on a
SQLite file or a PostgreSQL schema, SIGKILLs one at the moment the feature is
in use, and checks the outcome against the database (how each run ended,
which step attempts completed: :func:`tests.faults.ledger.tally`) and against
the ledger, a file every step body appends to (the oracle outside the
engine). Each reports one figure line before asserting:

- concurrency slot: ``Concurrency(limit=1, key=...)``, three workers, the
  holders of two keys' slots SIGKILLed mid-step: each slot is freed when the
  lease expires, the other runs of the key then proceed, and per key the
  step intervals never overlap (a killed attempt's interval lasts until its
  takeover ends).
- rate limit: ``RateLimit(3, per="1s", key=...)`` on a step, a worker with a
  call in flight SIGKILLed twice: no 1 s window holds more than 3 starts per
  key (killed calls included), no run fails, no step attempt fails (parking
  spends no attempt).
- schedule: ``Schedule("* * * * *", catchup="all")`` stored as first seen 40
  minutes ago (40 missed ticks). A lone worker SIGKILLs itself right after its
  3rd tick's run committed, a second right before its 4th creation (both
  injected in ``create_scheduled_run``), then three workers race on the
  remaining ticks and the test SIGKILLs one: exactly one run per tick, every
  one completed with its tick as output.
- saga: a step fails for good, its failure is memoized, compensations run;
  the worker is SIGKILLed in the first compensation (right after the failure
  was memoized) or in the second (mid-compensation), another worker finishes:
  each compensation's effect happens once, the failing step never runs
  again, and the output is the compensated one.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from openworkflow import OpenWorkflow
from openworkflow.core.backend import Backend
from openworkflow.core.schedule_store import ScheduleDefinition
from tests.faults import feature_app as app
from tests.faults.feature_checks import (
    call_takeovers,
    clocks_moved_back,
    crowded_windows,
    failed_attempts_of,
    get_run,
    in_flight,
    minute_ticks,
    overlaps_per_key,
    owner_of,
    reexecutions,
    repeated_effects,
    sigkill,
    starts,
    step_attempts,
    wait_for,
    wait_terminal,
)
from tests.faults.figures import Figure, report
from tests.faults.ledger import Expected, Tally, all_run_ids, tally
from tests.fixtures.backends import backend_url
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

WORKERS = 3
NAMES = {"sqlite_file": "SQLite", "postgres": "PostgreSQL"}


@pytest.fixture(params=["sqlite_file", "postgres"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    """Only backends another process can open (overrides the fixture of every kind)."""
    return str(request.param)


@asynccontextmanager
async def workers_on(
    backend: Any, kind: str, folder: Path, workflows: str, **options: str
) -> AsyncIterator[app.Fleet]:
    """A fleet for ``backend``; every process still alive is stopped (or killed) at the end."""
    url = backend_url(kind, backend)
    assert url is not None
    crew = app.fleet(folder, url, backend.namespace_id, workflows, **options)
    try:
        yield crew
    finally:
        crew.close()


def _why(counted: Tally, marks: list[app.Mark], more_runs: int = 0) -> str:
    """What made a figure's lost or duplicated count non-zero."""
    return (
        f"lost runs {counted.lost_runs}, steps completed twice {counted.duplicated_steps}, "
        f"step effects repeated {repeated_effects(marks)}, failing step re-run {more_runs}"
    )


# -- concurrency: the holder of a slot SIGKILLed ---------------------------------------------

SLOT_KEYS = ("A", "B", "C")
SLOT_RUNS_PER_KEY = 5
SLOT_GATED = ("A", "B")


async def _start_slot_runs(ow: OpenWorkflow) -> tuple[dict[str, str], list[str]]:
    """Every run (id -> key); the gated runs are created first, so they take their slots."""
    keys: dict[str, str] = {}
    gated = []
    for key in SLOT_GATED:
        handle = await ow.run(app.slot, {"key": key, "gated": True})
        keys[handle.id] = key
        gated.append(handle.id)
    for index in range(SLOT_RUNS_PER_KEY):
        for key in SLOT_KEYS:
            if not (index == 0 and key in SLOT_GATED):
                keys[(await ow.run(app.slot, {"key": key})).id] = key
    return keys, gated


async def _kill_slot_holders(crew: app.Fleet, gated: list[str]) -> tuple[set[int], float]:
    """SIGKILL the processes running the gated runs' steps, replace them, open the gate."""

    def all_started() -> bool:
        return {mark.run_id for mark in starts(crew.marks())} >= set(gated)

    await wait_until(all_started, timeout=30, message="the gated runs to hold their slots")
    holders = {mark.pid for mark in starts(crew.marks()) if mark.run_id in gated}
    for pid in holders:
        sigkill(owner_of(crew, pid))
    killed_at = time.monotonic()
    (crew.folder / "gate").touch()
    await crew.wait_ready([crew.spawn() for _ in holders])
    return holders, killed_at


async def test_sigkill_holding_a_concurrency_slot(
    backend: Backend, backend_kind: str, tmp_path: Path
) -> None:
    """F1: A worker SIGKILLed while it holds concurrency slots: freed by the lease, no overlap."""
    ow = OpenWorkflow(backend)
    async with workers_on(backend, backend_kind, tmp_path, "slot") as crew:
        await crew.wait_ready([crew.spawn() for _ in range(WORKERS)])
        keys, gated = await _start_slot_runs(ow)
        holders, killed_at = await _kill_slot_holders(crew, gated)
        await wait_terminal(backend, list(keys), timeout=60)
    marks = [mark for mark in crew.marks() if mark.step_name == "hold"]
    counted = await tally(
        backend, {run_id: Expected("completed", key) for run_id, key in keys.items()}
    )
    overlaps = overlaps_per_key(marks, "hold")
    # Per gated run, its first start in a process that was not killed: the takeover.
    taken_over = [
        min(mark.at - killed_at for mark in taken)
        for run_id in gated
        if (taken := [m for m in starts(marks) if m.run_id == run_id and m.pid not in holders])
    ]
    duplicated = counted.duplicated + repeated_effects(marks)
    report(
        Figure(
            fault_id="F1",
            title=f"worker SIGKILL holding a concurrency slot ({NAMES[backend_kind]})",
            runs=len(keys),
            faults=len(holders),
            lost=counted.lost,
            duplicated=duplicated,
            reexecuted_steps=reexecutions(marks),
            recovery_s=taken_over,
            details=(
                f"Concurrency(limit=1, key), {len(SLOT_KEYS)} keys x {SLOT_RUNS_PER_KEY} runs, "
                f"{WORKERS} workers x 4 slots, lease 1s, holders of {len(gated)} keys' slots "
                f"killed; {len(overlaps)} overlapping intervals per key"
            ),
        )
    )
    assert counted.lost == 0 and duplicated == 0, _why(counted, marks)
    assert overlaps == [], overlaps
    assert len(taken_over) == len(gated), "each gated run is taken over by another process"


# -- rate limit: a worker with calls in flight SIGKILLed -------------------------------------------

RATE_KEYS = ("x", "y")
RATE_RUNS_PER_KEY = 10
RATE_KILLS_AFTER = (3, 9)
"""SIGKILL a worker with a call in flight once this many calls started."""
JITTER_S = 0.1
"""Between a grant (database clock) and its body's first line: the worker's own latency."""


def _caller_once(crew: app.Fleet, threshold: int) -> Callable[[], list[app.Mark]]:
    """A condition: the calls in flight in live workers, once ``threshold`` calls started."""

    def flying() -> list[app.Mark]:
        marks = crew.marks()
        live = {worker.pid: worker for worker in crew.workers if worker.is_alive()}
        return in_flight(marks, live) if len(starts(marks)) >= threshold else []

    return flying


async def _kill_callers(crew: app.Fleet) -> list[tuple[float, list[str]]]:
    """At each threshold, SIGKILL a worker with a call in flight and start another.

    Returns when each kill happened and the runs whose calls it cut short.
    """
    kills = []
    for threshold in RATE_KILLS_AFTER:
        message = f"{threshold} calls, one in flight"
        flying = await wait_until(_caller_once(crew, threshold), timeout=30, message=message)
        victim = flying[0].pid
        sigkill(owner_of(crew, victim))
        cut_short = [mark.run_id for mark in flying if mark.pid == victim]
        kills.append((time.monotonic(), cut_short))
        crew.spawn()  # not waited for: the next kill must find calls still in flight
    return kills


async def test_sigkill_while_a_rate_limit_window_is_in_use(
    backend: Backend, backend_kind: str, tmp_path: Path
) -> None:
    """F1: Workers SIGKILLed mid-call under a step rate limit: no window over the limit."""
    ow = OpenWorkflow(backend)
    async with workers_on(backend, backend_kind, tmp_path, "rate") as crew:
        await crew.wait_ready([crew.spawn() for _ in range(2)])
        keys = {}
        for _ in range(RATE_RUNS_PER_KEY):
            for key in RATE_KEYS:
                keys[(await ow.run(app.rated, {"key": key})).id] = key
        kills = await _kill_callers(crew)
        await wait_terminal(backend, list(keys), timeout=60)
        await crew.wait_ready([worker for worker in crew.workers if worker.is_alive()])
    marks = [mark for mark in crew.marks() if mark.step_name == "call"]
    counted = await tally(
        backend, {run_id: Expected("completed", key) for run_id, key in keys.items()}
    )
    limit, per_s = app.RATE_LIMIT.limit, app.RATE_LIMIT.per_ms / 1000
    over, most = crowded_windows(starts(marks), limit, per_s - JITTER_S)
    failed_attempts, abandoned_count = await failed_attempts_of(backend, list(keys))
    duplicated = counted.duplicated + repeated_effects(marks)
    recovery = call_takeovers(marks, kills)
    report(
        Figure(
            fault_id="F1",
            title=f"worker SIGKILL while a rate-limit window is in use ({NAMES[backend_kind]})",
            runs=len(keys),
            faults=len(kills),
            lost=counted.lost,
            duplicated=duplicated,
            reexecuted_steps=reexecutions(marks),
            recovery_s=recovery,
            details=(
                f"step RateLimit({limit}, per 1s, key), {len(RATE_KEYS)} keys, "
                f"{len(starts(marks))} calls started; at most {most} starts in one window "
                f"(less {JITTER_S * 1000:.0f} ms), {over} windows over the limit, "
                f"{len(failed_attempts)} failed step attempts (besides {abandoned_count} "
                "abandoned by killed processes)"
            ),
        )
    )
    assert counted.lost == 0 and duplicated == 0, _why(counted, marks)
    assert over == 0, f"a window held {most} calls, over the limit of {limit}"
    assert failed_attempts == [], [attempt.error for attempt in failed_attempts]
    assert abandoned_count <= reexecutions(marks)
    assert len(recovery) == sum(len(run_ids) for _, run_ids in kills), "a cut call never resumed"


# -- schedules: workers SIGKILLed while they serve caught-up ticks -------------------------

DOWNTIME = timedelta(minutes=40)


async def _store_schedule_as_of_downtime(backend: Backend, kind: str) -> datetime:
    """Store the tick schedule as first seen ``DOWNTIME`` ago; its first sighting."""
    definition = ScheduleDefinition(
        name="feature-tick",
        workflow_name="feature-tick",
        version=None,
        schedule=app.TICK_SCHEDULE,
        input=None,
    )
    with clocks_moved_back(kind, DOWNTIME):
        await backend.upsert_schedules([definition])
    (stored,) = (await backend.list_schedules()).schedules
    assert stored.first_seen_at is not None
    return stored.first_seen_at


async def _die_around_ticks(backend: Backend, crew: app.Fleet) -> list[str]:
    """Two lone workers SIGKILL themselves around a tick; three racers then SIGKILL one.

    The first dies right after its 3rd tick's run committed, the second right
    before its 4th creation (each starts alone, so each gets that far). Then
    three workers race on the remaining ticks and the test SIGKILLs one of
    them as soon as they are all ready. Returns what each kill hit.
    """
    hits = []
    for plan in ("after:3", "before:4"):
        dying = crew.spawn(OW_FEATURE_DIE_AROUND_TICK=plan)
        await asyncio.to_thread(dying.process.wait, 60)
        assert dying.process.returncode == -signal.SIGKILL, dying.log()[-4000:]
        hits.append(f"{plan} ({len(await all_run_ids(backend))} tick runs then)")
    racers = [crew.spawn() for _ in range(WORKERS)]
    await crew.wait_ready(racers)
    sigkill(racers[0])
    hits.append(f"a racer ({len(await all_run_ids(backend))} tick runs then)")
    return hits


async def test_sigkill_around_schedule_ticks(
    backend: Backend, backend_kind: str, tmp_path: Path
) -> None:
    """F1: Workers SIGKILLed while three of them serve missed ticks: one run per tick."""
    first_seen = await _store_schedule_as_of_downtime(backend, backend_kind)
    async with workers_on(backend, backend_kind, tmp_path, "tick") as crew:
        kills = await _die_around_ticks(backend, crew)
        due = minute_ticks(first_seen, datetime.now(UTC) - timedelta(seconds=3))

        async def caught_up() -> bool:
            return len(await all_run_ids(backend)) >= len(due)

        await wait_for(caught_up, timeout=60, message="a run for every missed tick")
        run_ids = await all_run_ids(backend)
        await wait_terminal(backend, run_ids, timeout=60)
        # Let every scheduler look again (about once a second): a duplicate would appear now.
        await asyncio.sleep(2.5)
    run_ids = await all_run_ids(backend)
    runs = [run for run in [await get_run(backend, run_id) for run_id in run_ids] if run]
    served = [run.scheduled_at for run in runs]
    per_tick = {tick: served.count(tick) for tick in set(served)}
    missing = [tick for tick in due if tick not in per_tick]
    expected = {run.id: Expected("completed", _iso(run.scheduled_at)) for run in runs}
    counted = await tally(backend, expected)
    extra_runs = sum(count - 1 for count in per_tick.values())
    duplicated = extra_runs + counted.duplicated
    marks = crew.marks()
    report(
        Figure(
            fault_id="F1",
            title=f"worker SIGKILL around schedule ticks ({NAMES[backend_kind]}, 3 processes)",
            runs=len(runs),
            faults=len(kills),
            lost=len(missing) + counted.lost,
            duplicated=duplicated,
            reexecuted_steps=reexecutions(marks),
            details=(
                f'Schedule("* * * * *", catchup="all"), {len(due)} missed ticks caught up by '
                f"{WORKERS} racing workers; SIGKILLs: {', '.join(kills)}; "
                f"{extra_runs} ticks with a second run, {len(missing)} ticks without a run"
            ),
        )
    )
    assert missing == [] and counted.lost == 0, (missing, counted.lost_runs)
    assert duplicated == 0, (per_tick, counted.duplicated_steps)
    assert None not in per_tick


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


# -- saga: SIGKILL between a memoized failure and its compensations --------------------------------

SAGA_RUNS = 3
SAGA_OUTPUT = {"status": "compensated", "compensated": ["hotel", "flight"]}
DONE_AT_KILL = {
    "cancel-hotel": [("car", "failed"), ("flight", "completed"), ("hotel", "completed")],
    "cancel-flight": [
        ("car", "failed"),
        ("compensate-hotel", "completed"),
        ("flight", "completed"),
        ("hotel", "completed"),
    ],
}
"""Per kill point, the finished steps of each run when its worker dies."""


async def _finished_steps(backend: Backend, run_id: str) -> list[tuple[str, str]]:
    """(step name, status) of the run's attempts that are no longer running, sorted."""
    attempts = await step_attempts(backend, run_id)
    return sorted((a.step_name, a.status) for a in attempts if a.status != "running")


async def _hang_then_kill(crew: app.Fleet, hang: str) -> int:
    """Start a worker that hangs in ``hang``; SIGKILL it once every run hangs there."""
    worker = crew.spawn(OW_FEATURE_HANG=hang, OW_FEATURE_CONCURRENCY=str(SAGA_RUNS))

    def all_hanging() -> bool:
        return len(starts(crew.marks(), hang)) == SAGA_RUNS

    await wait_until(all_hanging, timeout=30, message=f"every run to hang in {hang}")
    sigkill(worker)
    return worker.pid


@pytest.mark.parametrize(
    "hang", ["cancel-hotel", "cancel-flight"], ids=["after-failure", "mid-compensation"]
)
async def test_sigkill_between_a_memoized_failure_and_its_compensation(
    backend: Backend, backend_kind: str, tmp_path: Path, hang: str
) -> None:
    """F1: A saga's worker SIGKILLed after the failure, before its compensations are done."""
    ow = OpenWorkflow(backend)
    handles = [await ow.run(app.saga_trip) for _ in range(SAGA_RUNS)]
    run_ids = [handle.id for handle in handles]
    async with workers_on(backend, backend_kind, tmp_path, "saga") as crew:
        victim = await _hang_then_kill(crew, hang)
        killed_at = time.monotonic()
        at_kill = [await _finished_steps(backend, run_id) for run_id in run_ids]
        await crew.wait_ready([crew.spawn()])
        await wait_terminal(backend, run_ids, timeout=60)
    marks = crew.marks()
    counted = await tally(
        backend, {run_id: Expected("completed", SAGA_OUTPUT) for run_id in run_ids}
    )
    car_runs = len(starts(marks, "car"))
    car_attempts = [
        attempt.status
        for run_id in run_ids
        for attempt in await step_attempts(backend, run_id)
        if attempt.step_name == "car"
    ]
    effects = [(m.run_id, m.step_name) for m in marks if m.event == "end"]
    undone = {name: effects.count for name in ("cancel-hotel", "cancel-flight")}
    once = all(undone[name]((run_id, name)) == 1 for name in undone for run_id in run_ids)
    duplicated = counted.duplicated + repeated_effects(marks) + car_runs - SAGA_RUNS
    recovery = [mark.at - killed_at for mark in starts(marks, hang) if mark.pid != victim]
    report(
        Figure(
            fault_id="F1",
            title=(
                "worker SIGKILL between a memoized saga failure and its compensation, "
                f"{'after the failure' if hang == 'cancel-hotel' else 'mid-compensation'} "
                f"({NAMES[backend_kind]})"
            ),
            runs=SAGA_RUNS,
            faults=1,
            lost=counted.lost,
            duplicated=duplicated,
            reexecuted_steps=reexecutions(marks),
            recovery_s=recovery,
            details=(
                f"killed in {hang}; failing step ran {car_runs} times for {SAGA_RUNS} runs, "
                f"its attempts {sorted(set(car_attempts))}"
            ),
        )
    )
    assert counted.lost == 0 and duplicated == 0, _why(counted, marks, car_runs - SAGA_RUNS)
    assert at_kill == [DONE_AT_KILL[hang]] * SAGA_RUNS, "killed elsewhere than intended"
    assert once, "each compensation's effect happens exactly once per run"
    assert car_attempts == ["failed"] * SAGA_RUNS, car_attempts
