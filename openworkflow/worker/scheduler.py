"""A worker's scheduler: creates the runs of its workflows' schedule ticks.

At start the worker stores the schedules its workflows declare
(:meth:`~openworkflow.core.schedule_store.ScheduleStore.upsert_schedules`);
then, about once a second (sooner when a tick is nearer), one cheap query
reads those schedules with the backend's clock, and each due tick
(:func:`~openworkflow.core.schedule.due_ticks`, by the schedule's catch-up
policy) is served by
:meth:`~openworkflow.core.schedule_store.ScheduleStore.create_scheduled_run`,
which creates its run at most once however many workers ask. Every worker
running a scheduled workflow does this; there is no leader to elect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import datetime

from openworkflow.core.backend import Backend
from openworkflow.core.concurrency import concurrency_columns
from openworkflow.core.schedule import due_ticks, next_tick
from openworkflow.core.schedule_store import (
    ScheduleDefinition,
    ScheduledRunParams,
    StoredSchedule,
)
from openworkflow.core.workflow_definition import Workflow
from openworkflow.errors import BackendError, InvalidScheduleError
from openworkflow.event_loop import cancel_and_wait

logger = logging.getLogger("openworkflow.worker")

POLL_INTERVAL_S = 1.0
"""Longest wait between two looks at the schedules (a pause or resume is seen within it)."""

MIN_WAIT_S = 0.05
"""Shortest wait, when a tick is due about now (the database clock may lag ours)."""


def schedule_definitions(workflows: Iterable[Workflow]) -> list[ScheduleDefinition]:
    """The schedules ``workflows`` declare, with their inputs validated.

    A schedule name declared twice (two versions of one workflow in one
    worker) is kept once, the first.

    Raises:
        InputValidationError: a schedule's input does not match its workflow's schema.
        PayloadError: a schedule's input is not JSON.
    """
    definitions: dict[str, ScheduleDefinition] = {}
    for item in workflows:
        spec = item.spec
        for name, schedule in zip(spec.schedule_names, spec.schedules, strict=True):
            if name in definitions:
                logger.warning("Schedule %r is declared twice; keeping the first", name)
                continue
            definitions[name] = ScheduleDefinition(
                name=name,
                workflow_name=spec.name,
                version=spec.version,
                schedule=schedule,
                input=spec.validate_input(schedule.input),
            )
    return list(definitions.values())


ConcurrencyColumns = tuple[str | None, int | None]


def schedule_concurrency(workflows: Iterable[Workflow]) -> dict[str, ConcurrencyColumns]:
    """Each schedule's runs' ``(concurrency_key, concurrency_limit)``, by schedule name.

    A schedule's input is fixed, so its key is computed once, from the
    validated input (both None for a workflow without a limit). A name
    declared twice keeps the first, as :func:`schedule_definitions` does.

    Raises:
        InputValidationError: a schedule's input does not match its workflow's schema.
        Exception: whatever a workflow's concurrency key function raises.
    """
    columns: dict[str, ConcurrencyColumns] = {}
    for item in workflows:
        spec = item.spec
        for name, schedule in zip(spec.schedule_names, spec.schedules, strict=True):
            if name in columns:
                continue
            if spec.concurrency is None:
                columns[name] = (None, None)
                continue
            validated, _ = spec.validate_input_value(schedule.input)
            columns[name] = concurrency_columns(spec.concurrency, validated)
    return columns


class Scheduler:
    """Stores a worker's schedules and creates their ticks' runs until stopped."""

    def __init__(self, backend: Backend, workflows: Iterable[Workflow]) -> None:
        self._backend = backend
        self._workflows = list(workflows)
        self._definitions: list[ScheduleDefinition] | None = None
        self._concurrency: dict[str, ConcurrencyColumns] = {}
        self._priorities = {
            name: item.spec.priority
            for item in self._workflows
            for name in item.spec.schedule_names
        }
        self._stored = False
        self._task: asyncio.Task[None] | None = None

    @property
    def definitions(self) -> list[ScheduleDefinition]:
        """The schedules this worker serves, their inputs validated on first use.

        Raises:
            InputValidationError: a schedule's input does not match its workflow's schema.
            PayloadError: a schedule's input is not JSON.
            Exception: whatever a workflow's concurrency key function raises.
        """
        if self._definitions is None:
            definitions = schedule_definitions(self._workflows)
            self._concurrency = schedule_concurrency(self._workflows)
            self._definitions = definitions
        return self._definitions

    def start(self) -> None:
        """Serve the schedules in the background (idempotent; nothing to do without any).

        Raises:
            InputValidationError: a schedule's input does not match its workflow's schema.
        """
        if self._task is None and self.definitions:
            self._task = asyncio.create_task(self._run(), name="openworkflow-scheduler")

    async def stop(self) -> None:
        """Stop serving ticks (a tick being served completes or rolls back)."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        while True:
            wait = POLL_INTERVAL_S
            try:
                _, wait = await self._poll()
            except BackendError as error:
                logger.warning("Could not serve schedules: %s", error)
            await asyncio.sleep(wait)

    async def run_due(self) -> int:
        """Serve every due tick now; return how many runs were created.

        Stores the schedules first if they are not stored yet.
        """
        if not self.definitions:
            return 0
        created, _ = await self._poll()
        return created

    async def _poll(self) -> tuple[int, float]:
        """Serve the due ticks; return the runs created and how long to wait for the next look."""
        if not self._stored:
            await self._backend.upsert_schedules(self.definitions)
            self._stored = True
        snapshot = await self._backend.list_schedules([item.name for item in self.definitions])
        created = 0
        waits = [POLL_INTERVAL_S]
        for stored in snapshot.schedules:
            if stored.paused_at is not None:
                continue
            try:
                created += await self._serve(stored, snapshot.now)
                following = next_tick(stored.schedule, max(snapshot.now, stored.first_seen_at))
            except InvalidScheduleError as error:  # a row another worker wrote badly
                logger.warning("Schedule %r cannot be served: %s", stored.name, error)
                continue
            waits.append((following - snapshot.now).total_seconds())
        return created, max(MIN_WAIT_S, min(waits))

    async def _serve(self, stored: StoredSchedule, now: datetime) -> int:
        created = 0
        ticks = due_ticks(stored.schedule, stored.last_tick_at, stored.first_seen_at, now)
        concurrency_key, concurrency_limit = self._concurrency.get(stored.name, (None, None))
        for tick in ticks:
            result = await self._backend.create_scheduled_run(
                ScheduledRunParams(
                    schedule_name=stored.name,
                    tick=tick,
                    priority=self._priorities.get(stored.name, 0),
                    concurrency_key=concurrency_key,
                    concurrency_limit=concurrency_limit,
                )
            )
            if result.run is not None:
                created += 1
                logger.info(
                    "Schedule %r: started run %s for %s",
                    stored.name,
                    result.run.id,
                    tick.isoformat(),
                )
        return created
