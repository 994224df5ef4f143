"""Events of one run (``step.set_event`` / ``handle.get_event``): the backend params and protocol.

An event is a (run, key) -> JSON value a running workflow publishes for its
callers (progress, an intermediate answer); setting a key again overwrites it,
the latest set wins. This port's own storage (``run_events``): a TypeScript
worker sharing the database never reads nor writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from openworkflow.core.json import JsonValue, check_name


def check_event_key(key: object) -> str:
    """``key`` once checked like a step name (a non-empty storable name)."""
    if not isinstance(key, str) or not key:
        raise TypeError(f"event key must be a non-empty string, got {key!r}")
    return check_name(key, "event key")


@dataclass(frozen=True, slots=True, kw_only=True)
class SetRunEventParams:
    """Input of :meth:`EventStore.set_run_event` (fenced by ``worker_id``)."""

    workflow_run_id: str
    worker_id: str
    key: str
    value: JsonValue = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GetRunEventParams:
    """Input of :meth:`EventStore.get_run_event`."""

    workflow_run_id: str
    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RunEvent:
    """The value an event key holds now (``value`` may be None: a set null)."""

    key: str
    value: JsonValue
    updated_at: datetime


class EventStore(Protocol):
    """Storage of run events, part of every :class:`~openworkflow.core.backend.Backend`."""

    async def set_run_event(self, params: SetRunEventParams) -> None:
        """Fenced: store the key's value, overwriting an earlier one.

        Raises:
            WriteConflictError: the run is not running and owned by ``worker_id``.
        """
        ...

    async def get_run_event(self, params: GetRunEventParams) -> RunEvent | None:
        """The key's current value, or None when it was never set."""
        ...

    async def list_run_events(self, workflow_run_id: str) -> list[RunEvent]:
        """Every event the run set, by key."""
        ...
