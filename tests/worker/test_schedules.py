"""Schedules through real workers (SPEC §15), on every backend.

Time is the ``clock`` fixture's: it moves the application clock and, on
PostgreSQL, the database's ``NOW()`` with it, so a minutely schedule ticks as
soon as the test moves the clock past a minute boundary. Workers either run
(their scheduler looks about once a second) or are driven by hand with
``Worker.run_schedules()``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from openworkflow import OpenWorkflow, RunInfo, Schedule, Step, workflow
from openworkflow.core.backend import Backend, ListWorkflowRunsParams
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import InvalidScheduleError, WorkflowDefinitionError
from tests.support.waiting import wait_until
from tests.worker.helpers import idle_worker, now, running_worker


@workflow(name="minutely", schedule="* * * * *")
async def minutely(run: RunInfo) -> str | None:
    return None if run.scheduled_at is None else run.scheduled_at.isoformat()


@workflow(name="ticker", schedules=[Schedule("* * * * *", overlap="allow")])
async def ticker() -> None:
    return None


@workflow(name="held-report", schedules=[Schedule("* * * * *")])
async def held_report(step: Step) -> None:
    await step.sleep("hold", "1h")  # active (parked) until the test cancels it


@workflow(name="overlapping-report", schedules=[Schedule("* * * * *", overlap="allow")])
async def overlapping_report(step: Step) -> None:
    await step.sleep("hold", "1h")


def _every_five(name: str, catchup: Any) -> Any:
    @workflow(
        name=name,
        schedules=[Schedule("*/5 * * * *", overlap="allow", catchup=catchup, input={"c": catchup})],
    )
    async def report(input: dict[str, str]) -> str:
        return input["c"]

    return report


catchup_skip = _every_five("catchup-skip", "skip")
catchup_last = _every_five("catchup-last", "last")
catchup_all = _every_five("catchup-all", "all")

passes: list[datetime | None] = []


@workflow(name="replayed", schedule="* * * * *")
async def replayed(step: Step, run: RunInfo) -> str | None:
    passes.append(run.scheduled_at)
    await step.sleep("nap", "20ms")  # a second pass replays the first
    return None if run.scheduled_at is None else run.scheduled_at.isoformat()


# -- helpers ---------------------------------------------------------------------------------


async def runs_of(backend: Backend, name: str) -> list[WorkflowRun]:
    page = await backend.list_workflow_runs(ListWorkflowRunsParams(workflow_name=name, limit=500))
    return sorted(page.data, key=lambda run: (run.scheduled_at or run.created_at, run.id))


async def ticks_of(backend: Backend, name: str) -> list[datetime | None]:
    return [run.scheduled_at for run in await runs_of(backend, name)]


def boundary_after(moment: datetime, minutes: int = 1) -> datetime:
    """The first instant after ``moment`` on a multiple of ``minutes`` (UTC)."""
    floor = moment.replace(second=0, microsecond=0)
    floor -= timedelta(minutes=floor.minute % minutes)
    return floor + timedelta(minutes=minutes)


def move_to(clock: Any, moment: datetime) -> None:
    clock.advance(moment - now())


async def wait_for_ticks(backend: Backend, name: str, count: int) -> None:
    async def enough() -> bool:
        return len(await ticks_of(backend, name)) >= count

    await wait_until(enough, message=f"{count} runs of schedule {name!r}")


# -- declaring -------------------------------------------------------------------------------


def test_schedule_and_schedules_together_are_refused() -> None:
    with pytest.raises(WorkflowDefinitionError, match="schedule= or schedules=, not both"):

        @workflow(schedule="* * * * *", schedules=[Schedule("0 9 * * *")])
        async def both() -> None: ...


def test_declared_schedules_and_their_names() -> None:
    @workflow(
        name="digest",
        schedules=[Schedule("0 9 * * MON-FRI", timezone="Europe/Paris"), Schedule("@daily")],
    )
    async def digest() -> None: ...

    assert [item.cron for item in digest.spec.schedules] == ["0 9 * * MON-FRI", "@daily"]
    assert digest.spec.schedule_names == ["digest", "digest:1"]
    assert minutely.spec.schedules == (Schedule("* * * * *"),)
    with pytest.raises(InvalidScheduleError, match="seconds field"):
        workflow(schedule="0 * * * * *")
    with pytest.raises(WorkflowDefinitionError, match="list of Schedule"):
        workflow(schedules="* * * * *")  # type: ignore[arg-type]


# -- exactly one run per tick ----------------------------------------------------------------


async def test_three_workers_create_exactly_one_run_per_tick(backend: Any, clock: Any) -> None:
    async with (
        running_worker(backend, [minutely]) as first,
        running_worker(backend, [minutely]) as second,
        running_worker(backend, [minutely]) as third,
    ):
        await asyncio.gather(*(worker.run_schedules() for worker in (first, second, third)))
        ow = OpenWorkflow(backend)
        expected = []
        for count in range(1, 5):
            tick = boundary_after(now())
            move_to(clock, tick + timedelta(seconds=5))
            expected.append(tick)
            # The three background schedulers and three racing calls by hand.
            await asyncio.gather(*(worker.run_schedules() for worker in (first, second, third)))
            await wait_for_ticks(backend, "minutely", count)
            # overlap="skip" (the default): the next tick needs this run finished.
            latest = (await runs_of(backend, "minutely"))[-1]
            assert await ow.handle(latest.id).result(timeout="10s") == tick.isoformat()
        # Each scheduler has looked again since the last tick: still one run each.
        await asyncio.gather(*(worker.run_schedules() for worker in (first, second, third)))
    assert await ticks_of(backend, "minutely") == expected
    runs = await runs_of(backend, "minutely")
    assert all(run.idempotency_key.startswith("__schedule:minutely:") for run in runs)


# -- overlap ---------------------------------------------------------------------------------


async def test_overlap_skip_starts_nothing_while_the_previous_run_is_active(
    backend: Any, clock: Any
) -> None:
    ow = OpenWorkflow(backend)
    async with running_worker(backend, [held_report, overlapping_report]) as worker:
        await worker.run_schedules()
        first = boundary_after(now())
        move_to(clock, first + timedelta(seconds=5))
        await worker.run_schedules()
        second = boundary_after(now())
        move_to(clock, second + timedelta(seconds=5))
        await worker.run_schedules()
        assert await ticks_of(backend, "held-report") == [first]  # second skipped
        assert await ticks_of(backend, "overlapping-report") == [first, second]
        (held,) = await runs_of(backend, "held-report")
        await ow.cancel(held.id)
        third = boundary_after(now())
        move_to(clock, third + timedelta(seconds=5))
        await worker.run_schedules()
        assert await ticks_of(backend, "held-report") == [first, third]


# -- catch-up after downtime -----------------------------------------------------------------


async def test_catchup_after_downtime_follows_each_policy(backend: Any, clock: Any) -> None:
    workflows = [catchup_skip, catchup_last, catchup_all]
    async with idle_worker(backend, workflows) as worker:
        await worker.run_schedules()  # first seen now
        first = boundary_after(now(), 5)
        move_to(clock, first + timedelta(seconds=5))
        assert await worker.run_schedules() == 3
    # Down for 22 minutes: the ticks at +5, +10, +15 and +20 are missed, and the
    # last of them is 2 minutes old when a worker is back.
    move_to(clock, first + timedelta(minutes=22))
    async with idle_worker(backend, workflows) as worker:
        assert await worker.run_schedules() == 0 + 1 + 4
        assert await worker.run_schedules() == 0
    missed = [first + timedelta(minutes=5 * n) for n in range(1, 5)]
    assert await ticks_of(backend, "catchup-skip") == [first]
    assert await ticks_of(backend, "catchup-last") == [first, missed[-1]]
    assert await ticks_of(backend, "catchup-all") == [first, *missed]
    (run, *_) = await runs_of(backend, "catchup-all")
    assert run.input == {"c": "all"}


# -- pause -----------------------------------------------------------------------------------


async def test_a_paused_schedule_creates_nothing_and_resumes_from_now(
    backend: Any, clock: Any
) -> None:
    ow = OpenWorkflow(backend)
    async with idle_worker(backend, [ticker]) as worker:
        await worker.run_schedules()
        first = boundary_after(now())
        move_to(clock, first + timedelta(seconds=5))
        assert await worker.run_schedules() == 1
        paused = await ow.pause_schedule("ticker")
        assert paused is not None and paused.paused_at is not None
        move_to(clock, boundary_after(now()) + timedelta(seconds=5))
        assert await worker.run_schedules() == 0
        resumed = await ow.resume_schedule("ticker")
        assert resumed is not None and resumed.paused_at is None
        # The tick that fell during the pause is not caught up.
        assert await worker.run_schedules() == 0
        third = boundary_after(now())
        move_to(clock, third + timedelta(seconds=5))
        assert await worker.run_schedules() == 1
        # A paused workflow's schedule creates nothing either.
        await ow.pause_workflow("ticker")
        move_to(clock, boundary_after(now()) + timedelta(seconds=5))
        assert await worker.run_schedules() == 0
    assert await ticks_of(backend, "ticker") == [first, third]
    assert await ow.pause_schedule("no-such-schedule") is None


# -- RunInfo.scheduled_at --------------------------------------------------------------------


async def test_scheduled_at_is_the_tick_on_every_pass(backend: Any, clock: Any) -> None:
    passes.clear()
    ow = OpenWorkflow(backend)
    async with running_worker(backend, [replayed]) as worker:
        await worker.run_schedules()
        tick = boundary_after(now())
        move_to(clock, tick + timedelta(seconds=5))
        await worker.run_schedules()
        (run,) = await runs_of(backend, "replayed")
        assert await ow.handle(run.id).result(timeout="10s") == tick.isoformat()
    assert len(passes) >= 2  # the sleep ended the first pass
    assert set(passes) == {tick}
    assert tick.tzinfo is not None and tick.utcoffset() == timedelta(0)
    unscheduled = await ow.run(minutely)
    assert unscheduled.id  # an ordinary run serves no tick
    assert (await ow.get_run(unscheduled.id)).scheduled_at is None  # type: ignore[union-attr]


def test_boundary_helper() -> None:
    moment = datetime(2026, 1, 1, 10, 7, 30, tzinfo=UTC)
    assert boundary_after(moment) == datetime(2026, 1, 1, 10, 8, tzinfo=UTC)
    assert boundary_after(moment, 5) == datetime(2026, 1, 1, 10, 10, tzinfo=UTC)


async def test_a_schedule_input_its_schema_rejects_stops_the_worker_from_starting() -> None:
    from openworkflow import InputValidationError, SqliteBackend, Worker

    @workflow(name="typed", schedules=[Schedule("@daily", input={"count": "many"})])
    async def typed(input: dict[str, int]) -> None: ...

    backend = SqliteBackend(":memory:")
    worker = Worker(backend, [typed])
    with pytest.raises(InputValidationError, match="typed"):
        await worker.start()
    await worker.stop()
    await backend.stop()
