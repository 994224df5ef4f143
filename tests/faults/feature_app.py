"""The worker program of the feature fault tests: ``python -m tests.faults.feature_app``.

Each worker process registers the workflows named in ``OW_FEATURE_WORKFLOWS``
(comma separated: ``slot``, ``rate``, ``tick``, ``saga``), so a scheduled
workflow never creates runs where a test did not ask for it. The backend
comes from the environment (``OW_TEST_BACKEND_URL``, a SQLite or PostgreSQL
URL, and ``OW_TEST_NAMESPACE``), so a password never shows in ``ps``.

Every step body appends lines to the ledger file ``OW_FEATURE_LEDGER`` (the
oracle outside the engine): ``start`` when the body begins and ``end`` when
its effect is done, with the run, the step, a key, the process id and the
system-wide monotonic clock. A line is one ``write`` to a file opened with
``O_APPEND``, so lines of several processes never interleave, and a SIGKILL
cannot lose a line already written (it is in the page cache).

The program prints ``ow-feature-ready pid=N`` once it claims runs and stops
gracefully on SIGTERM or SIGINT (:mod:`tests.support.processes`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openworkflow import Concurrency, RateLimit, RunInfo, Schedule, Step, Worker, connect, workflow
from openworkflow.core.backend import Backend
from openworkflow.core.schedule_store import ScheduledRunParams, ScheduledRunResult
from openworkflow.core.workflow_definition import Workflow
from openworkflow.saga import Saga
from tests.support import processes
from tests.support.processes import run_worker, stop_on_signals
from workflows.trip_booking import NoCarsAvailable

READY_MARKER = "ow-feature-ready"
LEDGER_VARIABLE = "OW_FEATURE_LEDGER"
GATE_VARIABLE = "OW_FEATURE_GATE"
HANG_VARIABLE = "OW_FEATURE_HANG"
DIE_VARIABLE = "OW_FEATURE_DIE_AROUND_TICK"

HOLD_S = 0.25
"""How long a concurrency-limited step holds its slot."""
CALL_S = 0.3
"""How long a rate-limited call lasts (so a kill can catch one in flight)."""
RATE_LIMIT = RateLimit(3, "1s", key=lambda value: value["key"])
"""At most 3 calls per key in any 1 s window."""
TICK_SCHEDULE = Schedule("* * * * *", overlap="allow", catchup="all")


# -- the ledger -------------------------------------------------------------------------------


def record(event: str, run_id: str, step_name: str, key: str = "-") -> None:
    """Append one ledger line: ``event run_id step_name key pid monotonic``."""
    line = f"{event} {run_id} {step_name} {key} {os.getpid()} {time.monotonic()!r}\n"
    descriptor = os.open(os.environ[LEDGER_VARIABLE], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)


@dataclass(frozen=True)
class Mark:
    """One ledger line."""

    event: str
    run_id: str
    step_name: str
    key: str
    pid: int
    at: float


def read_ledger(path: Path) -> list[Mark]:
    """Every line of the ledger at ``path``, in the order written."""
    if not path.exists():
        return []
    marks = []
    for line in path.read_text(encoding="utf-8").splitlines():
        event, run_id, step_name, key, pid, at = line.split()
        marks.append(Mark(event, run_id, step_name, key, int(pid), float(at)))
    return marks


def _starts(run_id: str, step_name: str) -> int:
    marks = read_ledger(Path(os.environ[LEDGER_VARIABLE]))
    return sum(
        1
        for mark in marks
        if (mark.event, mark.run_id, mark.step_name) == ("start", run_id, step_name)
    )


# -- concurrency: one run per key at a time ---------------------------------------------


async def hold(run_id: str, key: str, gated: bool) -> str:
    """Hold the key's slot; a gated run waits for the gate file (its worker gets killed)."""
    record("start", run_id, "hold", key)
    gate = Path(os.environ[GATE_VARIABLE])
    while gated and not gate.exists():
        await asyncio.sleep(0.01)
    await asyncio.sleep(HOLD_S)
    record("end", run_id, "hold", key)
    return key


@workflow(name="feature-slot", concurrency=Concurrency(limit=1, key=lambda value: value["key"]))
async def slot(input: dict[str, Any], step: Step, run: RunInfo) -> str:
    """One step that holds the run's concurrency slot (one run per key at a time)."""
    return str(await step.run("hold", hold, run.id, input["key"], input.get("gated", False)))


# -- rate limit: at most 3 calls per key per second ------------------------------------------------


async def call(run_id: str, key: str) -> str:
    """A rate-limited call that lasts :data:`CALL_S`."""
    record("start", run_id, "call", key)
    await asyncio.sleep(CALL_S)
    record("end", run_id, "call", key)
    return key


@workflow(name="feature-rate")
async def rated(input: dict[str, Any], step: Step, run: RunInfo) -> str:
    """One rate-limited call, its limit per the input's key."""
    return str(await step.run("call", call, run.id, input["key"], rate_limit=RATE_LIMIT))


# -- schedule: a run per minute tick, caught up after downtime ---------------------------


async def work(run_id: str) -> str:
    """A short step, so a kill can catch a tick's run in flight."""
    record("start", run_id, "work")
    await asyncio.sleep(0.2)
    record("end", run_id, "work")
    return run_id


@workflow(name="feature-tick", schedules=[TICK_SCHEDULE])
async def tick(step: Step, run: RunInfo) -> str:
    """The scheduled workflow: one step, then its own tick as the output."""
    await step.run("work", work, run.id)
    assert run.scheduled_at is not None
    return run.scheduled_at.isoformat()


# -- saga: a step fails for good, the compensations run ------------------------------------------


def book(run_id: str, what: str) -> str:
    """Book ``what`` (the booking names its run, for the compensation's ledger line)."""
    record("start", run_id, what)
    record("end", run_id, what)
    return f"{run_id}/{what}"


def rent_car(run_id: str) -> str:
    """Fail for good (``NoCarsAvailable`` is non-retryable)."""
    record("start", run_id, "car")
    raise NoCarsAvailable("no cars available")


def cancel(booking: str) -> str:
    """Undo ``booking``; hangs on its first execution when it is ``OW_FEATURE_HANG``.

    The hang comes before the undo's effect: the test SIGKILLs the worker there.
    """
    run_id, what = booking.split("/")
    name = f"cancel-{what}"
    record("start", run_id, name)
    if os.environ.get(HANG_VARIABLE) == name and _starts(run_id, name) == 1:
        time.sleep(300)  # runs in a thread: the heartbeat keeps the lease until the kill
    record("end", run_id, name)
    return f"cancelled {what}"


@workflow(name="feature-saga")
async def saga_trip(step: Step, run: RunInfo) -> dict[str, Any]:
    """Book a flight and a hotel, fail to rent a car: both bookings are compensated."""
    saga = Saga(step)
    try:
        async with saga:
            await saga.run("flight", book, run.id, "flight", compensate=cancel)
            await saga.run("hotel", book, run.id, "hotel", compensate=cancel)
            await saga.run("car", rent_car, run.id, compensate=cancel)
        status = "booked"
    except NoCarsAvailable:
        status = "compensated"
    return {"status": status, "compensated": saga.compensated}


WORKFLOWS: dict[str, Workflow] = {"slot": slot, "rate": rated, "tick": tick, "saga": saga_trip}


# -- the worker process ----------------------------------------------------------------------


def die_around_ticks(backend: Backend, plan: str) -> None:
    """SIGKILL this process around one of its scheduler's tick creations.

    ``plan`` is ``before:N`` (just before its N-th call to
    ``create_scheduled_run``) or ``after:N`` (just after the N-th call
    committed, before the scheduler goes on), like a crash at that instant.
    """
    when, _, count = plan.partition(":")
    calls = 0
    create = backend.create_scheduled_run

    async def create_or_die(params: ScheduledRunParams) -> ScheduledRunResult:
        nonlocal calls
        calls += 1
        if when == "before" and calls == int(count):
            os.kill(os.getpid(), signal.SIGKILL)
        result = await create(params)
        if when == "after" and calls == int(count):
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    backend.create_scheduled_run = create_or_die  # type: ignore[method-assign]


async def main() -> None:
    """Run one worker until SIGTERM or SIGINT, then stop it gracefully."""
    backend = connect(
        os.environ["OW_TEST_BACKEND_URL"], namespace_id=os.environ["OW_TEST_NAMESPACE"]
    )
    if DIE_VARIABLE in os.environ:
        die_around_ticks(backend, os.environ[DIE_VARIABLE])
    names = os.environ["OW_FEATURE_WORKFLOWS"].split(",")
    worker = Worker(
        backend,
        [WORKFLOWS[name] for name in names],
        concurrency=int(os.environ.get("OW_FEATURE_CONCURRENCY", "4")),
        lease_duration=os.environ.get("OW_FEATURE_LEASE", "1s"),
        shutdown_timeout="2s",
    )
    stop_requested = stop_on_signals()
    await run_worker(worker, stop_requested, READY_MARKER)
    await backend.stop()


# -- the test-process side ----------------------------------------------------------------------


class FeatureWorker(processes.WorkerProcess):
    """One worker subprocess of this module; stdout and stderr go to a log file."""

    module = "tests.faults.feature_app"
    ready_marker = READY_MARKER
    stop_signals = (signal.SIGCONT, signal.SIGTERM)


@dataclass
class Fleet:
    """The worker processes of one test, all on one backend and namespace."""

    folder: Path
    env: dict[str, str]
    workers: list[FeatureWorker]

    @property
    def ledger(self) -> Path:
        """The ledger file the step bodies append to."""
        return Path(self.env[LEDGER_VARIABLE])

    def spawn(self, **extra: str) -> FeatureWorker:
        """Start one more worker (not waited for); ``extra`` adds environment variables."""
        log = self.folder / f"worker-{len(self.workers)}.log"
        worker = FeatureWorker(log, [], {**self.env, **extra})
        self.workers.append(worker)
        return worker

    async def wait_ready(self, workers: list[FeatureWorker], timeout: float = 60.0) -> None:
        """Wait until ``workers`` all claim runs."""
        await asyncio.to_thread(processes.wait_all_ready, workers, timeout)

    def marks(self) -> list[Mark]:
        """The ledger so far."""
        return read_ledger(self.ledger)

    def close(self) -> list[int]:
        """Stop the live workers gracefully (kill any left); their exit codes."""
        codes = [worker.stop() for worker in self.workers if worker.is_alive()]
        for worker in self.workers:
            worker.kill()
        return codes


def fleet(folder: Path, url: str, namespace: str, workflows: str, **options: str) -> Fleet:
    """A fleet description (no process yet) for ``workflows`` (``OW_FEATURE_WORKFLOWS``)."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        "OW_TEST_BACKEND_URL": url,
        "OW_TEST_NAMESPACE": namespace,
        "OW_FEATURE_WORKFLOWS": workflows,
        LEDGER_VARIABLE: str(folder / "ledger.txt"),
        GATE_VARIABLE: str(folder / "gate"),
        **options,
    }
    return Fleet(folder, env, [])


if __name__ == "__main__":
    asyncio.run(main())
