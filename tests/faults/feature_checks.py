"""What the feature fault tests measure, from the ledger and the database.

The ledger (:mod:`tests.faults.feature_app`) says which step bodies started
and finished, in which process and when; the backend says how each run ended.
The helpers here turn both into a figure's numbers.
"""

from __future__ import annotations

import signal
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from openworkflow.core import clock as clock_module
from openworkflow.core.backend import Backend, GetWorkflowRunParams, ListStepAttemptsParams
from openworkflow.core.closing import closed_step_attempt_error
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_run import WorkflowRun
from tests.faults.feature_app import FeatureWorker, Fleet, Mark
from tests.fixtures.postgres import set_database_clock
from tests.support.waiting import wait_until

TERMINAL = ("completed", "failed", "canceled")


def starts(marks: Iterable[Mark], step_name: str | None = None) -> list[Mark]:
    """The ``start`` lines (of ``step_name`` if given)."""
    return [m for m in marks if m.event == "start" and step_name in (None, m.step_name)]


def reexecutions(marks: Sequence[Mark]) -> int:
    """Step bodies started again after a first start (the extra starts)."""
    counts = Counter((mark.run_id, mark.step_name) for mark in starts(marks))
    return sum(count - 1 for count in counts.values())


def repeated_effects(marks: Sequence[Mark]) -> int:
    """Step bodies that reached their end more than once (the extra ends)."""
    counts = Counter((m.run_id, m.step_name) for m in marks if m.event == "end")
    return sum(count - 1 for count in counts.values())


def overlaps_per_key(marks: Sequence[Mark], step_name: str) -> list[str]:
    """Pairs of runs of one key whose step intervals overlap.

    A run's interval goes from its first start to its last end: an attempt
    killed in its step holds the slot until its takeover finishes.
    """
    by_run: dict[str, list[Mark]] = defaultdict(list)
    for mark in marks:
        if mark.step_name == step_name:
            by_run[mark.run_id].append(mark)
    by_key: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for run_id, run_marks in by_run.items():
        ends = [mark.at for mark in run_marks if mark.event == "end"]
        if ends:  # a run without an end is counted lost by the database tally
            by_key[run_marks[0].key].append((run_marks[0].at, max(ends), run_id))
    found = []
    for key, intervals in by_key.items():
        for (_, end, first), (start, _, second) in pairwise(sorted(intervals)):
            if start < end:
                found.append(f"key {key}: {second} started {end - start:.3f}s before {first} ended")
    return found


def crowded_windows(marks: Sequence[Mark], limit: int, window_s: float) -> tuple[int, int]:
    """(windows over ``limit``, most starts seen in one window), per key, over all starts.

    A window is ``window_s`` long; each start opens one.
    """
    by_key: dict[str, list[float]] = defaultdict(list)
    for mark in marks:
        by_key[mark.key].append(mark.at)
    over = most = 0
    for instants in by_key.values():
        instants.sort()
        for index, opened in enumerate(instants):
            inside = sum(1 for at in instants[index:] if at - opened < window_s)
            most = max(most, inside)
            over += inside > limit
    return over, most


async def wait_terminal(backend: Backend, run_ids: Sequence[str], timeout: float) -> None:
    """Wait until every run in ``run_ids`` is completed, failed or canceled."""

    async def finished() -> bool:
        runs = [await get_run(backend, run_id) for run_id in run_ids]
        return all(run is not None and run.status in TERMINAL for run in runs)

    await wait_for(finished, timeout=timeout, message="every run to finish")


async def wait_for(
    condition: Callable[[], Awaitable[object]], *, timeout: float, message: str
) -> None:
    """:func:`~tests.support.waiting.wait_until` for an async condition (typed for mypy)."""

    async def holds() -> bool:
        return bool(await condition())

    checker: Callable[[], bool | Awaitable[bool]] = holds
    await wait_until(checker, timeout=timeout, interval=0.1, message=message)


async def get_run(backend: Backend, run_id: str) -> WorkflowRun | None:
    """One run, or None."""
    return await backend.get_workflow_run(GetWorkflowRunParams(workflow_run_id=run_id))


async def step_attempts(backend: Backend, run_id: str) -> list[StepAttempt]:
    """Every step attempt of one run (one page of 100 is plenty here)."""
    page = await backend.list_step_attempts(
        ListStepAttemptsParams(workflow_run_id=run_id, limit=100)
    )
    return list(page.data)


def owner_of(crew: Fleet, pid: int) -> FeatureWorker:
    """The fleet's worker process with ``pid``."""
    (owner,) = [worker for worker in crew.workers if worker.pid == pid]
    return owner


def sigkill(worker: FeatureWorker) -> None:
    """SIGKILL ``worker`` and reap it (a second SIGKILL does nothing)."""
    worker.signal(signal.SIGKILL)
    worker.kill()


def in_flight(marks: Sequence[Mark], live: Mapping[int, Any]) -> list[Mark]:
    """Starts of bodies without an end yet, in live processes (pids in ``live``)."""
    ended = {(m.run_id, m.step_name, m.pid) for m in marks if m.event == "end"}
    return [
        mark
        for mark in starts(marks)
        if mark.pid in live and (mark.run_id, mark.step_name, mark.pid) not in ended
    ]


def call_takeovers(marks: list[Mark], kills: list[tuple[float, list[str]]]) -> list[float]:
    """Per call cut short by a kill, the time until it started again (in another process)."""
    return [
        min(mark.at - killed_at for mark in again)
        for killed_at, run_ids in kills
        for run_id in run_ids
        if (again := [m for m in starts(marks) if m.run_id == run_id and m.at > killed_at])
    ]


async def failed_attempts_of(backend: Backend, run_ids: list[str]) -> tuple[list[Any], int]:
    """The runs' failed step attempts that spent an attempt, and how many were abandoned.

    A killed process's attempt stays running until its run completes, which
    closes it as abandoned (failed, with that reason): no attempt was spent.
    """
    abandoned = closed_step_attempt_error("completed")
    failed = [
        attempt
        for run_id in run_ids
        for attempt in await step_attempts(backend, run_id)
        if attempt.status == "failed"
    ]
    spent = [attempt for attempt in failed if attempt.error != abandoned]
    return spent, len(failed) - len(spent)


@contextmanager
def clocks_moved_back(kind: str, delta: timedelta) -> Iterator[None]:
    """This process's clock (and the PostgreSQL test clock) ``delta`` earlier."""
    real_now = clock_module.now
    clock_module.now = lambda: real_now() - delta
    if kind == "postgres":
        set_database_clock(-delta)
    try:
        yield
    finally:
        clock_module.now = real_now
        if kind == "postgres":
            set_database_clock(timedelta())


def minute_ticks(first_seen: datetime, last: datetime) -> list[datetime]:
    """Every minute tick strictly after ``first_seen`` up to ``last`` included."""
    moment = first_seen.replace(second=0, microsecond=0) + timedelta(minutes=1)
    ticks = []
    while moment <= last:
        ticks.append(moment)
        moment += timedelta(minutes=1)
    return ticks
