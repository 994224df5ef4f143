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

A real minute boundary is the slow part, so one test serves both backends
with it: a SQLite deployment and a PostgreSQL deployment, three workers each,
side by side through the same catch-up, the same kill and the same live tick.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
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
from tests.fixtures.postgres import per_worker, prepare_server, set_database_clock
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

KINDS = ("sqlite", "postgres")
WORKERS_PER_BACKEND = 3
SCHEMA = per_worker("ow_schedule_processes")
DOWNTIME = timedelta(minutes=30)
SCHEDULE = Schedule("* * * * *", overlap="allow", catchup="all")
BOOT_TIMEOUT_S = 60.0
"""Far above the few seconds a worker needs, even with six booting at once on two cores."""

FLOWS = """
from openworkflow import RunInfo, Schedule, workflow


@workflow(
    name="every-minute",
    schedules=[Schedule("* * * * *", overlap="allow", catchup="all")],
)
async def every_minute(run: RunInfo) -> str:
    return run.scheduled_at.isoformat()
"""

Tick = tuple[datetime | None, str, Any]


@dataclass
class Deployment:
    """One backend's project, its open backend, and the workers serving it."""

    kind: str
    project: Path
    backend: Backend
    workers: list[Background] = field(default_factory=list)
    first_seen: datetime | None = None


def _url(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'ow.db'}"
    url = prepare_server()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    return f"{url}&schema={SCHEMA}"


@contextmanager
def clocks_moved_back(delta: timedelta) -> Iterator[None]:
    """This process's clock and the PostgreSQL test database clock ``delta`` earlier."""
    real_now = clock_module.now
    clock_module.now = lambda: real_now() - delta  # type: ignore[assignment]
    set_database_clock(-delta)
    try:
        yield
    finally:
        clock_module.now = real_now  # type: ignore[assignment]
        set_database_clock(timedelta())


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Backend]:
    backend = connect(url)
    try:
        yield backend
    finally:
        await backend.stop()


async def deploy(kind: str, tmp_path: Path, stack: AsyncExitStack) -> Deployment:
    """A project for ``kind`` (config and flows) and an open backend on its database."""
    project = tmp_path / kind
    project.mkdir()
    url = _url(kind, project)
    write(
        project / "openworkflow.config.py",
        f"""
        from openworkflow import define_config
        config = define_config(backend={url!r}, dirs=["./flows"],
                               worker={{"shutdown_timeout": "2s", "lease_duration": "2s"}})
        """,
    )
    write(project / "flows" / "flows.py", FLOWS)
    return Deployment(kind, project, await stack.enter_async_context(opened(url)))


async def store_schedule_as_of_downtime(deployment: Deployment) -> None:
    """Store the schedule with the clocks moved back: first seen ``DOWNTIME`` ago."""
    definition = ScheduleDefinition(
        name="every-minute",
        workflow_name="every-minute",
        version=None,
        schedule=SCHEDULE,
        input=None,
    )
    await deployment.backend.upsert_schedules([definition])
    (stored,) = (await deployment.backend.list_schedules()).schedules
    deployment.first_seen = stored.first_seen_at


def launch_worker(deployment: Deployment) -> Background:
    """An ``ow worker start`` in the deployment's project (not waited for)."""
    return Background(deployment.project, "worker", "start", env=clean_env())


def wait_booted(workers: list[Background]) -> None:
    """Every worker has started (they boot side by side, so wait after launching all)."""
    for worker in workers:
        worker.wait_for("Worker started", timeout=BOOT_TIMEOUT_S)


async def served_ticks(backend: Backend) -> list[Tick]:
    page = await backend.list_workflow_runs(ListWorkflowRunsParams(limit=1000))
    return sorted(
        ((run.scheduled_at, run.status, run.output) for run in page.data),
        key=lambda item: item[0] or datetime.min.replace(tzinfo=UTC),
    )


def sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


async def wait_for_catch_up(deployments: list[Deployment]) -> None:
    """The 30 missed ticks' runs, raced for by each backend's workers."""

    async def caught_up() -> bool:
        counts = [len(await served_ticks(d.backend)) for d in deployments]
        return all(count >= 30 for count in counts)

    await wait_until(caught_up, timeout=45, message="the missed ticks' runs")


def kill_one_worker_across(boundary: datetime, deployments: list[Deployment]) -> None:
    """Each backend's first worker SIGKILLed just before ``boundary``, restarted just after."""
    sleep_until(boundary - timedelta(seconds=3))
    for deployment in deployments:
        deployment.workers[0].stop(signal.SIGKILL)
    sleep_until(boundary + timedelta(seconds=2))
    for deployment in deployments:
        deployment.workers[0] = launch_worker(deployment)
    wait_booted([deployment.workers[0] for deployment in deployments])


async def wait_for_live_tick(boundary: datetime, deployments: list[Deployment]) -> None:
    """The live tick's run on every backend, and every run there completed."""

    async def done(backend: Backend) -> bool:
        ticks = await served_ticks(backend)
        return any(tick == boundary for tick, _, _ in ticks) and all(
            status == "completed" for _, status, _ in ticks
        )

    async def all_done() -> bool:
        return all([await done(deployment.backend) for deployment in deployments])

    await wait_until(all_done, timeout=30, message="the live tick's run")


def assert_one_run_per_tick(deployment: Deployment, ticks: list[Tick], boundary: datetime) -> None:
    """Every tick from the first sighting to the last served has one completed run."""
    assert deployment.first_seen is not None
    served = [tick for tick, _, _ in ticks]
    assert served[-1] is not None and served[-1] >= boundary, deployment.kind
    expected = []
    moment = _next_boundary(deployment.first_seen)
    while moment <= served[-1]:
        expected.append(moment)
        moment += timedelta(minutes=1)
    assert served == expected, f"{deployment.kind}: a tick has no run, or more than one"
    assert all(
        status == "completed" and output == tick.isoformat()  # type: ignore[union-attr]
        for tick, status, output in ticks
    ), deployment.kind


@pytest.mark.timeout(240)
async def test_three_worker_processes_per_backend_create_exactly_one_run_per_tick(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        deployments = [await deploy(kind, tmp_path, stack) for kind in KINDS]
        with clocks_moved_back(DOWNTIME):
            for deployment in deployments:
                await store_schedule_as_of_downtime(deployment)
        for deployment in deployments:
            assert deployment.first_seen is not None
            assert datetime.now(UTC) - deployment.first_seen >= DOWNTIME - timedelta(seconds=5)

        for deployment in deployments:
            deployment.workers = [launch_worker(deployment) for _ in range(WORKERS_PER_BACKEND)]
        try:
            wait_booted([worker for d in deployments for worker in d.workers])
            await wait_for_catch_up(deployments)
            boundary = _next_boundary(datetime.now(UTC) + timedelta(seconds=8))
            kill_one_worker_across(boundary, deployments)
            await wait_for_live_tick(boundary, deployments)
            # Let every scheduler look again after the tick (they look about
            # once a second): a duplicate would be created now if it could be.
            await asyncio.sleep(2.5)
        finally:
            for deployment in deployments:
                for worker in deployment.workers:
                    worker.stop(signal.SIGTERM)

        outcomes = [(d, await served_ticks(d.backend)) for d in deployments]
    for deployment, ticks in outcomes:
        assert_one_run_per_tick(deployment, ticks, boundary)


def _next_boundary(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
