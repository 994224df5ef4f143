"""The storage side of schedules: stored schedule rows and the ``ScheduleStore`` protocol.

Workers write the schedules of the workflows they run into the ``schedules``
table (this port's own; TypeScript workers ignore it) and create each tick's
run through :meth:`ScheduleStore.create_scheduled_run`, which is atomic: the
schedule row is locked, ``last_tick_at`` re-checked and advanced, and the run
created, in one transaction. ``last_tick_at`` is what guarantees one run per
tick (a run's idempotency key only dedupes for 24 hours); the tick's key
(:func:`~openworkflow.core.schedule.tick_idempotency_key`) is a second guard.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from openworkflow.core.json import JsonValue
from openworkflow.core.schedule import Catchup, Overlap, Schedule, next_tick
from openworkflow.core.workflow_run import WorkflowRun


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleDefinition:
    """A schedule as a worker's code declares it, ready to store.

    ``input`` is the schedule's input already validated by the workflow's
    schema (the JSON every tick's run gets).
    """

    name: str
    workflow_name: str
    version: str | None
    schedule: Schedule
    input: JsonValue


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredSchedule:
    """A row of the ``schedules`` table.

    ``first_seen_at``: when a worker first stored it (the first tick is the
    first one after it); ``last_tick_at``: the latest tick served (a run was
    created, or the tick was skipped by the overlap or pause rules), None
    before the first; ``last_run_id``: the run the latest created tick started.
    """

    name: str
    workflow_name: str
    version: str | None
    cron: str
    timezone: str
    input: JsonValue
    overlap: Overlap
    catchup: Catchup
    first_seen_at: datetime
    last_tick_at: datetime | None
    last_run_id: str | None
    paused_at: datetime | None
    updated_at: datetime

    @property
    def schedule(self) -> Schedule:
        """The cron rule this row stores."""
        return Schedule(
            self.cron,
            timezone=self.timezone,
            input=self.input,
            name=self.name,
            overlap=self.overlap,
            catchup=self.catchup,
        )

    def next_tick(self) -> datetime:
        """The next tick a run can be created for (after the first sighting and the last tick)."""
        after = self.first_seen_at
        if self.last_tick_at is not None and self.last_tick_at > after:
            after = self.last_tick_at
        return next_tick(self.schedule, after)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleSnapshot:
    """Stored schedules with the backend's clock reading, taken together.

    ``now`` is the time ticks are judged by: PostgreSQL's ``NOW()``, or the
    application clock on SQLite, so workers whose clocks drift still agree.
    """

    now: datetime
    schedules: list[StoredSchedule]


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduledRunParams:
    """Input of :meth:`ScheduleStore.create_scheduled_run`: serve ``tick`` of a schedule."""

    schedule_name: str
    tick: datetime
    priority: int = 0
    #: The run's concurrency key and limit (both None: no limit), see
    #: :class:`~openworkflow.core.backend.CreateWorkflowRunParams`.
    concurrency_key: str | None = None
    concurrency_limit: int | None = None


TickOutcome = Literal["created", "already-served", "skipped-overlap", "skipped-paused", "unknown"]
"""What serving a tick did: created its run; nothing (served before, by this
call's rivals too); consumed it without a run because the previous run is
still active (``overlap="skip"``) or the schedule or its workflow is paused;
nothing because no such schedule is stored."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduledRunResult:
    """Output of :meth:`ScheduleStore.create_scheduled_run`."""

    outcome: TickOutcome
    run: WorkflowRun | None = None


class ScheduleStore(Protocol):
    """The storage of schedules, part of every :class:`~openworkflow.core.backend.Backend`."""

    async def upsert_schedules(self, definitions: Sequence[ScheduleDefinition]) -> None:
        """Store the schedules a worker declares.

        A new schedule is first seen now; a known one gets the new cron, time
        zone, input, policies and workflow version, and keeps its first
        sighting, last tick, last run and pause.
        """
        ...

    async def list_schedules(self, names: Sequence[str] | None = None) -> ScheduleSnapshot:
        """The stored schedules (only ``names`` if given), by name, with the backend's time."""
        ...

    async def pause_schedule(self, name: str) -> StoredSchedule | None:
        """Stop the schedule's ticks (idempotent); None if no such schedule."""
        ...

    async def resume_schedule(self, name: str) -> StoredSchedule | None:
        """Start the schedule's ticks again from now; None if no such schedule.

        Ticks that fell during the pause are not caught up: ``last_tick_at``
        moves to now.
        """
        ...

    async def create_scheduled_run(self, params: ScheduledRunParams) -> ScheduledRunResult:
        """Create the run of ``params.tick`` unless that tick was already served, atomically.

        In one transaction: lock the schedule row; if ``last_tick_at`` is at or
        after the tick, do nothing; if the schedule or its workflow is paused,
        or ``overlap="skip"`` and the previous run is active, only record the
        tick as served; otherwise create the run (the stored workflow, version
        and input; ``scheduled_at`` = the tick; the tick's idempotency key) and
        record the tick and the run. Racing callers create one run per tick.
        """
        ...
