"""Which schedule tick a run serves, for the run's page.

A run created for a tick of a schedule has ``scheduled_at`` (the tick) and the
tick's idempotency key, ``__schedule:<name>:<tick>`` (see
:func:`~openworkflow.core.schedule.tick_idempotency_key`), from which the
schedule's name is read back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from openworkflow.core.schedule import tick_idempotency_key
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.dashboard.context import DashboardContext

_PREFIX = "__schedule:"
_HASHED_NAME = re.compile(r"~[0-9a-f]{64}$")
"""How a name cut to fit an idempotency key ends (its SHA-256)."""


@dataclass(frozen=True, slots=True)
class ScheduledOrigin:
    """What made a run: the tick it serves, and its schedule's name when that can be told."""

    tick: datetime
    schedule_name: str | None


async def scheduled_origin(context: DashboardContext, run: WorkflowRun) -> ScheduledOrigin | None:
    """The tick a scheduled run serves (None for other runs, triggered ones included).

    The schedule's name is read back from the run's idempotency key
    (``__schedule:<name>:<tick>``, see
    :func:`~openworkflow.core.schedule.tick_idempotency_key`). A name too long
    for the key was cut and hashed there; it is then recognized only among the
    stored schedules, and left out if none matches.
    """
    if run.scheduled_at is None:
        return None
    key = run.idempotency_key or ""
    # The key of this tick for an empty name is "__schedule::<stamp>": its tail is ":<stamp>".
    empty = tick_idempotency_key("", run.scheduled_at)
    tail = empty[len(_PREFIX) :]
    if not (key.startswith(_PREFIX) and key.endswith(tail) and len(key) > len(empty)):
        return ScheduledOrigin(run.scheduled_at, None)
    name = key[len(_PREFIX) : -len(tail)]
    if _HASHED_NAME.search(name) is None:
        return ScheduledOrigin(run.scheduled_at, name)
    stored = (await context.client.list_schedules()).schedules
    matches = [s.name for s in stored if tick_idempotency_key(s.name, run.scheduled_at) == key]
    return ScheduledOrigin(run.scheduled_at, matches[0] if len(matches) == 1 else None)
