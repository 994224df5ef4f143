"""Three real ``ow worker start`` processes serve one schedule: exactly one run per tick.

Cron has no seconds, so real ticks come once a minute. The test gets many
ticks honestly, without a hook in the product: before the workers start, the
test process stores the schedule as first seen 30 minutes ago (it moves its
own clock back for that one call, as the ``clock`` fixture does), as if the
deployment had been down since. With ``catchup="all"`` the three workers then
race on those 30 missed ticks at once. Then they run across one real minute
boundary, with one worker SIGKILLed just before it and restarted just after.
At the end every tick from the first sighting to the last served has exactly
one run, and every run completed with its own tick as ``RunInfo.scheduled_at``.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from openworkflow import Schedule, connect
from openworkflow.core import clock as clock_module
from openworkflow.core.backend import Backend, ListWorkflowRunsParams
from openworkflow.core.schedule_store import ScheduleDefinition
from tests.cli.helpers import Background, clean_env, write
from tests.fixtures.postgres import prepare_server, set_database_clock
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

SCHEMA = "ow_schedule_processes"
DOWNTIME = timedelta(minutes=30)
SCHEDULE = Schedule("* * * * *", overlap="allow", catchup="all")

FLOWS = """
from openworkflow import RunInfo, Schedule, workflow


@workflow(
    name="every-minute",
    schedules=[Schedule("* * * * *", overlap="allow", catchup="all")],
)
async def every_minute(run: RunInfo) -> str:
    return run.scheduled_at.isoformat()
"""


def _url(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'ow.db'}"
    url = prepare_server()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    return f"{url}&schema={SCHEMA}"


@contextmanager
def clock_moved_back(kind: str, delta: timedelta) -> Iterator[None]:
    """This process's clock (and, on PostgreSQL, the test database clock) ``delta`` earlier."""
    real_now = clock_module.now
    clock_module.now = lambda: real_now() - delta  # type: ignore[assignment]
    if kind == "postgres":
        set_database_clock(-delta)
    try:
        yield
    finally:
        clock_module.now = real_now  # type: ignore[assignment]
        if kind == "postgres":
            set_database_clock(timedelta())


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Backend]:
    backend = connect(url)
    try:
        yield backend
    finally:
        await backend.stop()


async def served_ticks(backend: Backend) -> list[tuple[datetime | None, str, Any]]:
    page = await backend.list_workflow_runs(ListWorkflowRunsParams(limit=1000))
    return sorted(
        ((run.scheduled_at, run.status, run.output) for run in page.data),
        key=lambda item: item[0] or datetime.min.replace(tzinfo=UTC),
    )


def start_worker(project: Path) -> Background:
    worker = Background(project, "worker", "start", env=clean_env())
    worker.wait_for("Worker started", timeout=30)
    return worker


def sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_three_worker_processes_create_exactly_one_run_per_tick(
    kind: str, tmp_path: Path
) -> None:
    url = _url(kind, tmp_path)
    write(
        tmp_path / "openworkflow.config.py",
        f"""
        from openworkflow import define_config
        config = define_config(backend={url!r}, dirs=["./flows"],
                               worker={{"shutdown_timeout": "2s", "lease_duration": "2s"}})
        """,
    )
    write(tmp_path / "flows" / "flows.py", FLOWS)
    async with opened(url) as backend:
        with clock_moved_back(kind, DOWNTIME):
            await backend.upsert_schedules(
                [
                    ScheduleDefinition(
                        name="every-minute",
                        workflow_name="every-minute",
                        version=None,
                        schedule=SCHEDULE,
                        input=None,
                    )
                ]
            )
        (stored,) = (await backend.list_schedules()).schedules
        first_seen = stored.first_seen_at
        assert datetime.now(UTC) - first_seen >= DOWNTIME - timedelta(seconds=5)

        workers = [start_worker(tmp_path) for _ in range(3)]
        try:
            # The 30 missed ticks, raced for by three processes.
            async def caught_up() -> bool:
                return len(await served_ticks(backend)) >= 30

            await wait_until(caught_up, timeout=30, message="the missed ticks' runs")

            # A live tick, with one worker killed just before it and back just after.
            boundary = _next_boundary(datetime.now(UTC) + timedelta(seconds=8))
            sleep_until(boundary - timedelta(seconds=3))
            workers[0].stop(signal.SIGKILL)
            sleep_until(boundary + timedelta(seconds=2))
            workers[0] = start_worker(tmp_path)

            async def live_tick_done() -> bool:
                ticks = await served_ticks(backend)
                return any(tick == boundary for tick, _, _ in ticks) and all(
                    status == "completed" for _, status, _ in ticks
                )

            await wait_until(live_tick_done, timeout=30, message="the live tick's run")
            # Let every scheduler look again after the tick (they look about
            # once a second): a duplicate would be created now if it could be.
            await asyncio.sleep(2.5)
        finally:
            for worker in workers:
                worker.stop(signal.SIGTERM)

        ticks = await served_ticks(backend)
    served = [tick for tick, _, _ in ticks]
    assert served[-1] is not None and served[-1] >= boundary
    expected = []
    moment = _next_boundary(first_seen)
    while moment <= served[-1]:
        expected.append(moment)
        moment += timedelta(minutes=1)
    assert served == expected, "a tick has no run, or more than one"
    assert all(
        status == "completed" and output == tick.isoformat()  # type: ignore[union-attr]
        for tick, status, output in ticks
    )


def _next_boundary(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
