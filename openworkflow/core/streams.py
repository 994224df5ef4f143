"""Streams of one run (``step.stream`` / ``handle.stream``): the backend params and protocol.

A stream is an ordered, append-only list of JSON values a running workflow
publishes under a key (progress, tokens, partial answers). Item ``seq`` (1, 2,
3...) is the position of the ``step.stream`` call among the pass's calls for
that key, so a replay writes each position at most once: appending a position
that is already stored is a no-op. Readers follow ``seq`` and see every item
from the first. This port's own storage (``run_streams``): a TypeScript
worker sharing the database never reads nor writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from openworkflow.core.json import JsonValue, check_name

STREAM_READ_LIMIT = 1000
"""The most items one :meth:`StreamStore.read_run_stream` returns (readers page on)."""


def check_stream_key(key: object) -> str:
    """``key`` once checked like a step name (a non-empty storable name)."""
    if not isinstance(key, str) or not key:
        raise TypeError(f"stream key must be a non-empty string, got {key!r}")
    return check_name(key, "stream key")


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendRunStreamParams:
    """Input of :meth:`StreamStore.append_run_stream` (fenced by ``worker_id``)."""

    workflow_run_id: str
    worker_id: str
    key: str
    seq: int
    """The item's position in the stream, from 1."""
    value: JsonValue = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadRunStreamParams:
    """Input of :meth:`StreamStore.read_run_stream`: items after ``after_seq``, in order."""

    workflow_run_id: str
    key: str
    after_seq: int = 0
    limit: int = STREAM_READ_LIMIT


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStreamItem:
    """One stored item of a stream."""

    seq: int
    value: JsonValue
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStreamExtent:
    """How much of a stream is stored: ``count`` items, the highest position ``last_seq``.

    ``count == last_seq`` means positions 1 to ``last_seq`` are all stored.
    """

    key: str
    count: int
    last_seq: int
    updated_at: datetime | None = None
    """When the newest item was written (None for an empty stream)."""


class StreamStore(Protocol):
    """Storage of run streams, part of every :class:`~openworkflow.core.backend.Backend`."""

    async def append_run_stream(self, params: AppendRunStreamParams) -> bool:
        """Fenced: store the item at ``seq``; False when that position was already stored.

        Readers in other processes are told (NOTIFY, the SQLite watcher).

        Raises:
            WriteConflictError: the run is not running and owned by ``worker_id``.
        """
        ...

    async def read_run_stream(self, params: ReadRunStreamParams) -> list[RunStreamItem]:
        """Up to ``limit`` items with ``seq > after_seq``, lowest first."""
        ...

    async def get_run_stream_extent(self, workflow_run_id: str, key: str) -> RunStreamExtent:
        """How many items of the stream are stored, and its highest position."""
        ...

    async def list_run_streams(self, workflow_run_id: str) -> list[RunStreamExtent]:
        """Every stream the run wrote, by key."""
        ...
